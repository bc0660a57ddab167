"""engine components of gcnet_mm."""
