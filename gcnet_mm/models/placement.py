"""Insert blocks (GC, SNL, NL, SE, ...) into built ResNet/ResNeXt backbones.

Paper: "GCNet: Non-local Networks Meet Squeeze-Excitation Networks and Beyond",
Cao et al., ICCV Workshops 2019, https://arxiv.org/abs/1904.11492 (Table 2(a)
one block before the last residual block of c4, 2(b) "after1x1" vs
"afterAdd", 2(c) stages).

mmdet's ``plugins=`` puts a plugin after conv1/conv2/conv3 of every Bottleneck
of whole stages, mmseg's likewise, mmpretrain's ResNet has no plugins at all,
and mmaction2's ``ResNet3d`` (``ResNet3dSlowOnly``...) places only mmcv's
``NonLocal3d`` (``non_local=``). :func:`insert_blocks` adds what the paper
needs on top of any of them:

* ``position='after_add'``, on the output of a residual block (where NL
  blocks go), next to mmdet's ``'after_conv1'``, ``'after_conv2'`` and
  ``'after_conv3'``;
* chosen residual blocks (``blocks={'layer3': [-2]}``) as well as whole stages
  (``stages=(False, True, True, True)``, mmdet's format);
* BasicBlock ResNets (R-18/34), which mmdet and mmseg refuse plugins for;
* the ResNets of mmdet, mmseg and mmpretrain alike, and mmaction2's 3-D ones,
  whose residual blocks hold each conv with its norm (and activation) in a
  ``ConvModule`` (``conv1``..``conv3``): there the hooks on ``norm2`` and
  ``norm3`` below are hooks on ``conv2`` and ``conv3`` (their outputs are
  after the norm), and the blocks are the 3-D ones
  (``gcnet_mm.ContextBlock3d``...).

Each block becomes a child of its residual block under mmdet's name
(``layer3.5.context_block``), so state dicts match mmdet's native plugins key
for key, and is wired in with forward hooks on the residual block's own layers:

================  ==========================================================
position          hook
================  ==========================================================
``after_conv1``   pre-hook on ``conv2`` (after norm1 + ReLU)
``after_conv2``   pre-hook on ``conv3`` (Bottleneck: after norm2 + ReLU);
                  hook on ``norm2`` (BasicBlock: after norm2, before the add)
``after_conv3``   hook on ``norm3`` (Bottleneck only: before the residual add
                  and before mmpretrain's ``drop_path``)
``after_add``     hook on the residual block (its output, after the ReLU)
================  ==========================================================

The hooks are small picklable objects that look the block up by name on its
residual block when they run, so they follow ``copy.deepcopy``, ``torch.save``
of the whole model, state-dict loading, ``torch.jit.trace`` and
``torch.compile``. A guard (a pre-hook on the residual block) re-attaches a
hook whose layer was swapped for a new module, as
``nn.SyncBatchNorm.convert_sync_batchnorm``, mmengine's
``revert_sync_batchnorm`` (run by mmdet's ``init_detector`` on CPU) and
mmcv's ``fuse_conv_bn`` do with the norm layers.
"""
import copy
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmcv.cnn import ConvModule
from mmcv.cnn.bricks.plugin import infer_abbr
from mmengine.registry import DefaultScope, Registry
from torch import nn

from gcnet_mm.registry import MODELS

__all__ = ['insert_blocks', 'BackboneWithBlocks', 'POSITIONS']

#: Where a block can go in a residual block.
POSITIONS = ('after_conv1', 'after_conv2', 'after_conv3', 'after_add')

_PLUGIN_KEYS = ('cfg', 'position', 'stages', 'blocks', 'postfix')

# Attribute of a residual block listing the hooks placed in it.
_HOOKS_ATTR = '_gcnet_mm_hooks'
# Attribute of a hooked layer: (block name, pre) of the hooks it carries.
_CARRIED_ATTR = '_gcnet_mm_carried_hooks'


class _RunBlock:
    """A forward hook or pre-hook that runs one inserted block.

    Picklable, and deep-copied along with the model: it holds the residual
    block (``host``) and finds the inserted block by name when it runs.

    Args:
        host: the residual block holding the inserted block.
        name: attribute name of the inserted block in ``host``.
        target: name of the child of ``host`` to hook, or ``None`` for
            ``host`` itself.
        pre: ``True`` for a forward pre-hook (rewrites the input of
            ``target``), ``False`` for a forward hook (rewrites its output).
    """

    def __init__(self, host: nn.Module, name: str, target: Optional[str],
                 pre: bool) -> None:
        self.host = host
        self.name = name
        self.target = target
        self.pre = pre
        self.attached: Optional[nn.Module] = None  # module hooked now

    def __call__(self, module: nn.Module, args: tuple, *output: Any) -> Any:
        block = getattr(self.host, self.name)
        if self.pre:
            return (block(args[0]), ) + tuple(args[1:])
        return block(output[0])

    def target_module(self) -> nn.Module:
        if self.target is None:
            return self.host
        return getattr(self.host, self.target)

    def attach(self) -> None:
        """Register on the current target module unless already there (the
        module lists the hooks it carries in an attribute, copied with it as
        its hooks are)."""
        module = self.target_module()
        if self.attached is module:
            return
        carried = getattr(module, _CARRIED_ATTR, None)
        if carried is None:
            carried = set()
            setattr(module, _CARRIED_ATTR, carried)
        key = (self.name, self.pre)
        if key not in carried:
            if self.pre:
                module.register_forward_pre_hook(self)
            else:
                module.register_forward_hook(self)
            carried.add(key)
        self.attached = module

    def __repr__(self) -> str:
        where = self.target or '<residual block>'
        kind = 'pre-hook' if self.pre else 'hook'
        return f'_RunBlock({self.name!r}, {kind} on {where})'


class _Reattach:
    """Pre-hook on a residual block: keep its :class:`_RunBlock` hooks on the
    block's current layers (a layer swapped by a conversion loses its hooks).

    Args:
        host: the residual block.
    """

    def __init__(self, host: nn.Module) -> None:
        self.host = host

    def __call__(self, module: nn.Module, args: tuple) -> None:
        for hook in getattr(self.host, _HOOKS_ATTR):
            if hook.target is not None and (hook.attached
                                            is not hook.target_module()):
                hook.attach()


class _InitInsertedBlocks:
    """``init_weights`` for a stage container that has none (mmpretrain's
    ``ResLayer`` is a plain ``nn.Sequential``), so that a parent mmengine
    ``BaseModule.init_weights`` reaches the inserted blocks after applying
    its own ``init_cfg`` (Kaiming on every conv), as it does through mmdet's
    and mmseg's ``Sequential``. Only the inserted blocks are initialised.

    Args:
        layer: the stage container.
    """

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer

    def __call__(self) -> None:
        for host in self.layer.children():
            for hook in getattr(host, _HOOKS_ATTR, ()):
                block = getattr(host, hook.name)
                if hasattr(block, 'init_weights') and not getattr(
                        block, 'is_init', False):
                    block.init_weights()


class _InitBlocksAfterHost:
    """``init_weights`` of a host that initialises every layer below it
    itself and never calls its children's ``init_weights`` (mmaction2's
    ``ResNet3d`` family: Kaiming on every ``Conv3d`` and ones in every norm,
    or weights inflated from a 2-D checkpoint into its ``ConvModule``
    layers):
    the host's own, then the inserted blocks', so they start as themselves
    (a GC block as the identity).

    Args:
        backbone: the host, whose class's ``init_weights`` runs first.
    """

    def __init__(self, backbone: nn.Module) -> None:
        self.backbone = backbone

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        type(self.backbone).init_weights(self.backbone, *args, **kwargs)
        for name in self.backbone.res_layers:
            _InitInsertedBlocks(getattr(self.backbone, name))()


def _res_layers(backbone: nn.Module) -> List[str]:
    names = getattr(backbone, 'res_layers', None)
    if not names or not all(
            isinstance(getattr(backbone, n, None), nn.Module) for n in names):
        raise TypeError(
            f'backbone must be a built ResNet/ResNeXt of mmdet, mmseg or '
            f'mmpretrain, or a ResNet3d of mmaction2 (an nn.Module with a '
            f'res_layers list of its stage names), got '
            f'{type(backbone).__name__}')
    return list(names)


def _is_bottleneck(block: nn.Module) -> bool:
    return isinstance(getattr(block, 'conv3', None), nn.Module)


def _normed(block: nn.Module, k: int) -> Optional[str]:
    """The child of ``block`` whose output is conv ``k`` normalised: the norm
    layer ``norm{k}_name`` names (mmdet, mmseg, mmpretrain), or the
    ``ConvModule`` ``conv{k}`` (conv + norm, mmaction2's 3-D blocks)."""
    name = getattr(block, f'norm{k}_name', None)
    if name is None and isinstance(getattr(block, f'conv{k}', None),
                                   ConvModule):
        name = f'conv{k}'
    return name


def _check_residual_block(block: nn.Module, where: str) -> None:
    for attr in ('conv1', 'conv2'):
        if not hasattr(block, attr):
            break
    else:
        if _normed(block, 2) is not None:
            return
        attr = 'norm2_name'
    raise TypeError(
        f'{where} is a {type(block).__name__}, not a residual block of a '
        f'ResNet (no {attr!r}); insert_blocks supports the Bottleneck and '
        f'BasicBlock of mmdet, mmseg and mmpretrain and the Bottleneck3d and '
        f'BasicBlock3d of mmaction2')


def _insertion_point(block: nn.Module, position: str,
                     where: str) -> Tuple[int, Optional[str], bool]:
    """Channels at ``position`` of ``block``, the child to hook (``None``:
    the block itself) and whether the hook is a pre-hook."""
    bottleneck = _is_bottleneck(block)
    if position == 'after_conv1':
        return block.conv1.out_channels, 'conv2', True
    if position == 'after_conv2':
        if bottleneck:
            return block.conv2.out_channels, 'conv3', True
        return block.conv2.out_channels, _normed(block, 2), False
    if position == 'after_conv3':
        if not bottleneck:
            raise ValueError(
                f"position='after_conv3' does not exist in {where}, a "
                f'{type(block).__name__} with two convs; use one of '
                f"['after_conv1', 'after_conv2', 'after_add'] there "
                f"('after_conv2' is after norm2, before the residual add)")
        return block.conv3.out_channels, _normed(block, 3), False
    last = block.conv3 if bottleneck else block.conv2
    return last.out_channels, None, False  # after_add


def _select_blocks(backbone: nn.Module, layers: List[str], plugin: dict,
                   index: int) -> List[Tuple[str, int]]:
    """(layer name, block index >= 0) of each residual block ``plugin``
    names, in forward order."""
    stages = plugin.get('stages')
    blocks = plugin.get('blocks')
    what = f'plugins[{index}]'
    if (stages is None) == (blocks is None):
        example = {layers[-2 if len(layers) > 1 else 0]: [-2]}
        raise ValueError(
            f'{what} must give exactly one of stages (whole stages, e.g. '
            f'{tuple(i > 0 for i in range(len(layers)))}) and blocks (layer '
            f'name -> block indices, e.g. {example}), got stages={stages!r}, '
            f'blocks={blocks!r}')
    chosen = []
    if stages is not None:
        if not isinstance(stages, (list, tuple)) or not all(
                isinstance(s, bool) for s in stages):
            raise TypeError(f'{what}: stages must be a list/tuple of bools, '
                            f'one per stage, got {stages!r}')
        if len(stages) != len(layers):
            raise ValueError(
                f'{what}: stages={stages!r} has {len(stages)} entries but '
                f'the backbone has {len(layers)} stages {layers}')
        for name, on in zip(layers, stages):
            if on:
                chosen += [(name, i)
                           for i in range(len(getattr(backbone, name)))]
        return chosen
    if not isinstance(blocks, dict):
        raise TypeError(f'{what}: blocks must be a dict of layer name -> '
                        f"block indices, e.g. {{'layer3': [-2]}}, got "
                        f'{blocks!r}')
    for name, indices in blocks.items():
        if name not in layers:
            raise ValueError(f'{what}: blocks names layer {name!r}, which '
                             f'is not a stage of the backbone; allowed: '
                             f'{layers}')
        if isinstance(indices, int) and not isinstance(indices, bool):
            indices = [indices]
        if not isinstance(indices, (list, tuple)) or not all(
                isinstance(i, int) and not isinstance(i, bool)
                for i in indices):
            raise TypeError(f'{what}: blocks[{name!r}] must be a list of '
                            f'int block indices, got {indices!r}')
        n = len(getattr(backbone, name))
        for i in indices:
            if not -n <= i < n:
                raise ValueError(
                    f'{what}: block index {i} is outside {name}, which has '
                    f'{n} residual blocks (allowed: {-n} to {n - 1})')
            chosen.append((name, i % n))
    order = {name: k for k, name in enumerate(layers)}
    return sorted(chosen, key=lambda li: (order[li[0]], li[1]))


def _block_cfg(plugin: dict, index: int) -> Tuple[dict, str]:
    """Copy of the block config without ``postfix``, and the postfix."""
    what = f'plugins[{index}]'
    cfg = plugin.get('cfg')
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f"{what}: cfg must be a block config dict with a "
                        f"'type', e.g. dict(type='gcnet_mm.ContextBlock', "
                        f'ratio=1/16), got {cfg!r}')
    cfg = copy.deepcopy(dict(cfg))
    inner = cfg.pop('postfix', None)  # mmdet's place for it
    outer = plugin.get('postfix')
    if inner is not None and outer is not None and str(inner) != str(outer):
        raise ValueError(f'{what}: postfix given twice with different '
                         f'values ({outer!r} and cfg.postfix={inner!r})')
    postfix = outer if outer is not None else inner
    return cfg, '' if postfix is None else str(postfix)


def _build_block(cfg: dict, in_channels: int, what: str) -> nn.Module:
    given = cfg.get('in_channels')
    if given is not None and given != in_channels:
        raise ValueError(
            f'{what}: cfg sets in_channels={given!r} but the insertion point '
            f'has {in_channels} channels; leave in_channels out')
    cfg['in_channels'] = in_channels
    # Unscoped types resolve in gcnet_mm first, then in mmcv/mmengine.
    with DefaultScope.overwrite_default_scope('gcnet_mm'):
        block = MODELS.build(cfg)
    if not isinstance(block, nn.Module):
        raise TypeError(f'{what}: cfg built a {type(block).__name__}, not an '
                        f'nn.Module')
    return block


def insert_blocks(backbone: nn.Module, plugins: Sequence[dict]) -> nn.Module:
    """Insert blocks into a built ResNet/ResNeXt, in place.

    Works on the ResNets of mmdet (``ResNet``, ``ResNetV1d``, ``ResNeXt``,
    DCN variants), mmseg (``ResNet``, ``ResNetV1c``, ``ResNetV1d``,
    ``ResNeXt``) and mmpretrain (``ResNet``, ``ResNetV1c``, ``ResNetV1d``,
    ``ResNeXt``), Bottleneck and BasicBlock, and on mmaction2's ``ResNet3d``
    family (``ResNet3d``, ``ResNet3dSlowOnly``...; give them 3-D blocks such
    as ``gcnet_mm.ContextBlock3d``). A block inserted at
    ``'after_conv1/2/3'`` of whole stages gives the same module names,
    state-dict keys and outputs as mmdet's native ``plugins=``. Blocks at one
    position of one residual block run in the order given (after any native
    mmdet plugins at ``'after_conv1'``/``'after_conv2'``, before those at
    ``'after_conv3'``). Inserted blocks follow the backbone's train/eval mode
    and its ``frozen_stages``. The host's ``init_weights`` calls the inserted
    blocks' own ``init_weights`` after its ``init_cfg`` (a stage container
    without one, like mmpretrain's plain ``nn.Sequential`` ``ResLayer``, gets
    an instance attribute ``init_weights`` that does only that; mmaction2's
    ``ResNet3d``, whose ``init_weights`` initialises every layer itself,
    gets one that runs its own and then the blocks'), so
    gcnet_mm's blocks start as identity. All plugins are checked and built
    before the backbone is changed, so an error leaves it untouched.

    Args:
        backbone: the built backbone; changed in place and returned.
        plugins: one dict per kind of block to insert, with keys

            - ``cfg`` (dict, required): the block config, built with
              ``gcnet_mm.registry.MODELS``; ``in_channels`` is filled in
              with the channels at the insertion point. An unscoped type
              (``'ContextBlock'``) resolves to gcnet_mm's class first.
            - ``position`` (str, required): one of :data:`POSITIONS`:
              ``'after_conv1'`` (after norm1 + ReLU), ``'after_conv2'``
              (after norm2 + ReLU in a Bottleneck; after norm2, before the
              add, in a BasicBlock), ``'after_conv3'`` (after norm3, before
              the residual add; Bottleneck only) or ``'after_add'`` (on the
              output of the residual block).
            - ``stages`` (sequence of bool): whole stages, one entry per
              stage, as in mmdet; or
            - ``blocks`` (dict): layer name -> block indices, e.g.
              ``{'layer3': [-2]}`` (negative indices count from the end).
              Exactly one of ``stages`` and ``blocks`` must be given.
            - ``postfix`` (str or int, optional): appended to the block's
              abbreviation (``_abbr_`` or its snake-case class name) to
              name it, as mmdet's ``cfg.postfix`` (accepted there too).

    Returns:
        ``backbone`` itself, with e.g. ``layer3[4].context_block`` added.

    Raises:
        TypeError: ``backbone`` is not such a ResNet, or a plugin entry has
            the wrong type.
        ValueError: unknown key or position, a position the residual block
            cannot take (``'after_conv3'`` in a BasicBlock), wrong-length
            ``stages``, both or neither of ``stages``/``blocks``, a layer
            name or block index outside the backbone, or a name already
            used in the residual block.
    """
    if not isinstance(backbone, nn.Module):
        raise TypeError(f'backbone must be an nn.Module, got '
                        f'{type(backbone).__name__}')
    if not isinstance(plugins, (list, tuple)):
        raise TypeError(f'plugins must be a list of dicts, got {plugins!r}')
    layers = _res_layers(backbone)

    # 1. check and build everything; the backbone is not touched yet.
    todo = []  # (residual block, name, block, target, pre)
    taken: Dict[int, set] = {}
    for index, plugin in enumerate(plugins):
        what = f'plugins[{index}]'
        if not isinstance(plugin, dict):
            raise TypeError(f'{what} must be a dict with keys '
                            f'{list(_PLUGIN_KEYS)}, got {plugin!r}')
        unknown = sorted(set(plugin) - set(_PLUGIN_KEYS))
        if unknown:
            raise ValueError(f'{what} has unknown keys {unknown}; allowed: '
                             f'{list(_PLUGIN_KEYS)}')
        position = plugin.get('position')
        if position not in POSITIONS:
            raise ValueError(f'{what}: unknown position {position!r}, '
                             f'expected one of {list(POSITIONS)}')
        cfg, postfix = _block_cfg(plugin, index)
        for layer, i in _select_blocks(backbone, layers, plugin, index):
            host = getattr(backbone, layer)[i]
            where = f'{layer}.{i}'
            _check_residual_block(host, where)
            channels, target, pre = _insertion_point(host, position, where)
            block = _build_block(copy.deepcopy(cfg), channels, what)
            name = infer_abbr(type(block)) + postfix
            names = taken.setdefault(id(host), set())
            if name in names or hasattr(host, name):
                raise ValueError(
                    f'{what}: {where} already has a child or attribute '
                    f'named {name!r}; give this plugin a different postfix '
                    f'(e.g. postfix=1)')
            names.add(name)
            todo.append((host, name, block, target, pre))

    # 2. insert and wire.
    for host, name, block, target, pre in todo:
        block.train(host.training)
        host.add_module(name, block)
        hooks = getattr(host, _HOOKS_ATTR, None)
        if hooks is None:
            hooks = []
            # nn.Module.__setattr__ keeps a plain list as a plain attribute.
            setattr(host, _HOOKS_ATTR, hooks)
            host.register_forward_pre_hook(_Reattach(host))
        hook = _RunBlock(host, name, target, pre)
        hook.attach()
        hooks.append(hook)

    for layer in layers:
        layer = getattr(backbone, layer)
        if not hasattr(layer, 'init_weights'):
            layer.init_weights = _InitInsertedBlocks(layer)
    if todo and hasattr(backbone, 'inflate_weights'):  # mmaction2's ResNet3d
        backbone.init_weights = _InitBlocksAfterHost(backbone)
    if todo:  # the host's train() freezes frozen stages, blocks included
        backbone.train(backbone.training)
    return backbone


@MODELS.register_module(name='BackboneWithBlocks')
def BackboneWithBlocks(*, backbone_type: str, plugins: Sequence[dict],
                       **kwargs: Any) -> nn.Module:
    """Build a host ResNet/ResNeXt and insert blocks into it.

    Registered as ``gcnet_mm.BackboneWithBlocks`` for configs::

        backbone=dict(
            type='gcnet_mm.BackboneWithBlocks',
            backbone_type='mmdet.ResNet',
            plugins=[dict(cfg=dict(type='gcnet_mm.ContextBlock', ratio=1/16),
                          blocks={'layer3': [-2]}, position='after_add')],
            depth=50, num_stages=4, out_indices=(0, 1, 2, 3), ...)

    The object returned is the host's own (e.g. an ``mmdet`` ``ResNet``), so
    state-dict names, ``init_cfg`` and ``init_weights`` are the host's
    (``backbone.layer3.4.context_block.*``); gcnet_mm's blocks re-initialise
    themselves after the host's ``init_cfg``, so they start as identity.

    Args:
        backbone_type: the host's registered type with its scope, e.g.
            ``'mmdet.ResNet'``, ``'mmseg.ResNetV1c'``,
            ``'mmpretrain.ResNet'``, ``'mmaction.ResNet3dSlowOnly'``; the
            host is built with that scope as the default scope.
        plugins: the blocks to insert, as in :func:`insert_blocks`.
        **kwargs: the host's own arguments (``depth``, ``init_cfg``, ...).

    Returns:
        The host backbone with the blocks inserted.

    Raises:
        ValueError: ``backbone_type`` has no scope or names no registered
            type; see also :func:`insert_blocks`.
        TypeError: ``backbone_type`` is not a string.
    """
    if not isinstance(backbone_type, str):
        raise TypeError(f'backbone_type must be a scoped type name such as '
                        f"'mmdet.ResNet', got {backbone_type!r}")
    scope, _ = Registry.split_scope_key(backbone_type)
    if not scope:
        raise ValueError(
            f'backbone_type={backbone_type!r} has no scope; write it with '
            f"its package, e.g. 'mmdet.{backbone_type}', "
            f"'mmseg.{backbone_type}' or 'mmpretrain.{backbone_type}'")
    if 'type' in kwargs:
        raise ValueError(f"give the host type as backbone_type, not type="
                         f"{kwargs['type']!r}")
    with DefaultScope.overwrite_default_scope(scope):
        if MODELS.get(backbone_type) is None:
            raise ValueError(
                f'backbone_type={backbone_type!r} is not registered (is '
                f'{scope} installed, and is the name spelled right?)')
        backbone = MODELS.build(dict(type=backbone_type, **kwargs))
    return insert_blocks(backbone, plugins)
