"""evaluation components of gcnet_mm."""
