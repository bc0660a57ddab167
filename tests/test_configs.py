"""Every config under configs/ builds the model it says it does.

* every config builds (SyncBN turned into BN, no pretrained weights, so no
  GPU and no download);
* a config named like an upstream one (mmdet/mmseg ``configs/gcnet``, mmseg's
  FCN baseline) builds exactly the upstream state dict: same keys, same
  shapes, so the released checkpoints load strictly;
* no GC/NL/SNL/SE module of any config is an upstream class (mmcv's
  ``ContextBlock``/``NonLocal2d``, mmseg's ``GCHead``/``NLHead``, the SE
  layers of mmdet/mmseg/mmpretrain): all are gcnet_mm's, at the places the
  config's name says;
* parameter counts match the paper's (Table 2(a), Table 3, Table 4(a),
  Table 5 and the slides' Cityscapes head comparison), as the metafiles'
  ``Paper Rows`` give them;
* one tiny forward per task;
* the video models inflate from 2-D ImageNet weights, all but the new blocks.

Detection, segmentation and video models are built on the meta device (no
memory, no random init: ~0.3 s for a Mask R-CNN); mmpretrain's ResNet calls
``Tensor.item()`` while building, so classification models are real. Each
config is built once per session and reduced to a small summary.
"""
import functools
import os.path as osp
import re
from pathlib import Path
from typing import Dict, NamedTuple, Optional, Tuple

import pytest
import torch
from mmengine.config import Config

import gcnet_mm  # noqa: F401
from gcnet_mm.analysis.flops import build_model as complexity_build_model
from gcnet_mm.analysis.flops import resolve_config
from gcnet_mm.analysis.paper_figures import (load_models, paper_rows,
                                             printed_decimals)

mmdet = pytest.importorskip('mmdet')
mmseg = pytest.importorskip('mmseg')
mmpretrain = pytest.importorskip('mmpretrain')
mmaction = pytest.importorskip('mmaction')

CONFIGS = Path(__file__).resolve().parents[1] / 'configs'
DEFAULT_SCOPE = {
    'detection': 'mmdet',
    'segmentation': 'mmseg',
    'classification': 'mmpretrain',
    'recognition': 'mmaction'
}


def _configs(task: str, folder: Optional[str] = None):
    pattern = f'{folder}/*.py' if folder else '*/*.py'
    return sorted(
        str(p.relative_to(CONFIGS))
        for p in (CONFIGS / task).glob(pattern) if '_toy_' not in p.parts)


ALL_CONFIGS = [c for task in DEFAULT_SCOPE for c in _configs(task)]

# Package config -> the upstream config it must equal, module for module.
UPSTREAM = {
    **{
        c: f"mmdet::gcnet/{osp.basename(c)}"
        for c in _configs('detection', 'gcnet')
    },
    **{
        c: f"mmseg::gcnet/{osp.basename(c)}"
        for c in _configs('segmentation', 'gcnet')
    },
    'segmentation/gcnet_paper/fcn_r101-d8_4xb2-80k_cityscapes-512x1024.py':
    'mmseg::fcn/fcn_r101-d8_4xb2-80k_cityscapes-512x1024.py',
    'classification/gcnet/resnet50_8xb64-coslr-120e_in1k.py':
    'mmpretrain::resnet/resnet50_8xb32_in1k.py',
    'classification/gcnet/resnet50_8xb64-ft-coslr-40e_in1k.py':
    'mmpretrain::resnet/resnet50_8xb32_in1k.py',
    'recognition/gcnet/slowonly_imagenet-pretrained-r50_8xb16-8x8x1-steplr-'
    '150e_kinetics400-rgb.py':
    'mmaction::recognition/slowonly/slowonly_imagenet-pretrained-r50_8xb16-'
    '8x8x1-steplr-150e_kinetics400-rgb.py',
}


def _upstream_classes() -> Tuple[type, ...]:
    from mmcv.cnn import ContextBlock, NonLocal2d, NonLocal3d
    from mmdet.models.layers import SELayer as DetSE
    from mmpretrain.models.utils import SELayer as PretrainSE
    from mmseg.models.decode_heads import GCHead, NLHead
    from mmseg.models.utils import SELayer as SegSE
    return (ContextBlock, NonLocal2d, NonLocal3d, GCHead, NLHead, DetSE,
            SegSE, PretrainSE)


def _config_path(name: str) -> str:
    """A path of this repo's configs/, or 'pkg::rel' of an installed one."""
    return resolve_config(name)


def build_model(name: str, meta: bool = False) -> torch.nn.Module:
    """The model of a config with BN and no pretrained weights (classifiers
    are always built for real: mmpretrain's ResNet reads values)."""
    return complexity_build_model(name, meta=meta)[0]


class Summary(NamedTuple):
    shapes: Dict[str, Tuple[int, ...]]  # state dict: name -> shape
    params: int
    blocks: Dict[str, str]  # module name -> class name, gcnet_mm blocks
    upstream: Tuple[str, ...]  # modules of upstream block/head classes
    backbone: Dict[str, object]


@functools.lru_cache(maxsize=None)
def summary(name: str) -> Summary:
    task = 'classification' if ('mmpretrain' in name
                                or name.startswith('classification')) else ''
    model = build_model(name, meta=not task)
    forbidden = _upstream_classes()
    blocks, upstream = {}, []
    for mod_name, module in model.named_modules():
        cls = type(module)
        if cls.__module__.startswith('gcnet_mm.models.blocks'):
            blocks[mod_name] = cls.__name__
        elif isinstance(module, forbidden):
            upstream.append(f'{mod_name}: {cls.__module__}.{cls.__name__}')
    bb = model.backbone
    backbone = dict(
        type=type(bb).__name__,
        depth=getattr(bb, 'depth', None),
        groups=getattr(bb, 'groups', 1),
        conv2_groups=bb.layer1[0].conv2.groups,
        stage_blocks=tuple(len(getattr(bb, n)) for n in bb.res_layers),
        dcn=sorted({
            type(m.conv2).__name__
            for n in bb.res_layers for m in getattr(bb, n)
        }))
    return Summary(
        shapes={k: tuple(v.shape)
                for k, v in model.state_dict().items()},
        params=sum(p.numel() for p in model.parameters()),
        blocks=blocks,
        upstream=tuple(upstream),
        backbone=backbone)


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_builds_with_gcnet_mm_blocks_only(name):
    result = summary(name)
    assert result.upstream == (), (
        f'{name} resolved to upstream classes: {result.upstream}')


def test_every_config_is_tested():
    # the folders this test knows; a new folder must be added on purpose
    folders = {str(p.parent.relative_to(CONFIGS))
               for p in CONFIGS.glob('*/*/*.py') if '_toy_' not in p.parts}
    assert folders == {
        'detection/gcnet', 'detection/gcnet_paper', 'segmentation/gcnet',
        'segmentation/gcnet_paper', 'classification/gcnet',
        'recognition/gcnet'
    }
    assert len(_configs('detection', 'gcnet')) == 19
    assert len(_configs('segmentation', 'gcnet')) == 16


@pytest.mark.parametrize('name', sorted(UPSTREAM))
def test_same_state_dict_as_upstream(name):
    ours, theirs = summary(name), summary(UPSTREAM[name])
    assert ours.backbone == theirs.backbone
    missing = sorted(set(theirs.shapes) - set(ours.shapes))
    unexpected = sorted(set(ours.shapes) - set(theirs.shapes))
    assert not missing and not unexpected, (missing[:5], unexpected[:5])
    wrong = {
        k: (ours.shapes[k], theirs.shapes[k])
        for k in ours.shapes if ours.shapes[k] != theirs.shapes[k]
    }
    assert not wrong, wrong
    # every GC block upstream is a gcnet_mm ContextBlock here, same place
    upstream_gc = {
        m.group(0)
        for m in map(re.compile(r'.*\.(context_block|gc_block)').match,
                     theirs.shapes) if m
    }
    assert upstream_gc == {
        k for k, v in ours.blocks.items() if v == 'ContextBlock'
    }


# Known upstream defect (mmdet v2): an X101 DCN GC config built a ResNet-50.
@pytest.mark.parametrize(
    'name', [c for c in _configs('detection') if 'x101' in c])
def test_x101_configs_build_resnext101(name):
    backbone = summary(name).backbone
    assert backbone['type'] == 'ResNeXt'
    assert backbone['depth'] == 101 and backbone['groups'] == 32
    assert backbone['conv2_groups'] == 32
    assert backbone['stage_blocks'] == (3, 4, 23, 3)
    dcn = 'dconv' in name
    assert ('DeformConv2dPack' in backbone['dcn']) == dcn, backbone['dcn']


# --- where the blocks are -------------------------------------------------

_KIND = {
    '-gcb-': 'ContextBlock',
    '-nl-': 'NonLocalBlock',
    '-snl-': 'SNLBlock',
    '-se-': 'SEBlock'
}
_STAGES = {'c3': 'layer2', 'c4': 'layer3', 'c5': 'layer4'}
# The non-local paper's 5 video blocks: every other one of res3 and res4.
_FIVE_BLOCKS = [('layer2', 1), ('layer2', 3), ('layer3', 1), ('layer3', 3),
                ('layer3', 5)]


def _expected_blocks(name: str, stage_blocks) -> Optional[Dict[str, str]]:
    """Module names and classes of the blocks a config's name promises."""
    # e.g. mask-rcnn-r50-syncbn-gcb-r16-c3-c5, resnet50-nl-c4-1blk-8xb64-ft-..
    base = '-'.join(osp.basename(name).split('_')[:2])
    kinds = [v for k, v in _KIND.items() if k in f'-{base}-']
    if not kinds:
        return {}
    kind, = kinds
    abbr = {'ContextBlock': 'context_block', 'NonLocalBlock': 'nonlocal_block',
            'SNLBlock': 'snl_block', 'SEBlock': 'se_block'}[kind]
    if name.startswith('recognition'):
        kind += '3d'  # the blocks on video features
    if '-c4-1blk' in base:  # just before the last residual block of c4
        places = [('layer3', stage_blocks[2] - 2)]
    elif '-5blk' in base:
        places = _FIVE_BLOCKS
    else:
        tokens = base.split('-')
        if 'c3' in tokens and 'c5' in tokens and tokens.index(
                'c5') == tokens.index('c3') + 1:
            stages = ['c3', 'c4', 'c5']
        else:
            stages = [t for t in tokens if t in _STAGES]
        places = [(_STAGES[s], i) for s in stages
                  for i in range(stage_blocks[int(s[1]) - 2])]
    prefix = 'backbone.'
    return {f'{prefix}{layer}.{i}.{abbr}': kind for layer, i in places}


@pytest.mark.parametrize(
    'name',
    _configs('detection') + _configs('classification') +
    _configs('recognition'))
def test_blocks_where_the_name_says(name):
    result = summary(name)
    # a GC config of mmdet's zoo puts one block per residual block of c3-c5
    expected = _expected_blocks(name, result.backbone['stage_blocks'])
    assert result.blocks == expected


# --- parameter counts -----------------------------------------------------

DET = 'detection/gcnet/'
DET_PAPER = 'detection/gcnet_paper/mask-rcnn_r50-syncbn-'
CLS = 'classification/gcnet/resnet50'
VID = 'recognition/gcnet/slowonly_'
VID_SUFFIX = '_8xb16-8x8x1-steplr-150e_kinetics400-rgb.py'

# The paper's figures (Tables 2(a), 3, 4(a), 5 and the slides' Cityscapes
# head comparison) are the metafiles' Paper Rows.
PAPER_PARAMS = [row for row in paper_rows() if row.params is not None]


def _row_id(row) -> str:
    return f'{row.source}, {row.row}'


@pytest.mark.parametrize('row', PAPER_PARAMS, ids=_row_id)
def test_params_match_paper(row):
    """Every count rounds to the paper's figure at the paper's printed
    precision, but for the rows whose remark says why not ('paper params:
    ...': R-101 +GC r16 and X-101 +GC r4 of Table 3), which are within one
    printed unit and do not round to it."""
    digits = printed_decimals(
        r.params for r in PAPER_PARAMS if r.source == row.source)
    millions = summary(row.config).params / 1e6
    assert abs(millions - row.params) < 10**-digits, millions
    explained = (row.remark or '').startswith('paper params:')
    assert (round(millions, digits) == row.params) != explained, (
        millions, row.remark)


def test_paper_r101_gc_rows_contradict_each_other():
    """GC r4 and r16 differ only in the blocks' ratio, so their parameter
    difference is fixed by c3-c5's widths: 14,173,632 for R-101 and X-101.
    The paper's R-101 figures (each rounded to 0.1M) put it above that."""
    per_ratio = {}
    for arch in ('r101', 'x101-32x4d'):
        r4, r16 = (summary(f'{DET}mask-rcnn_{arch}-syncbn-gcb-{r}-c3-c5_fpn_'
                           '1x_coco.py').params for r in ('r4', 'r16'))
        per_ratio[arch] = r4 - r16
    # channel_add: C -> C/r -> C convs with biases and LN(C/r) per block;
    # c3-c5 have 4 x 512, 23 x 1024 and 3 x 2048 channels
    blocks = [512] * 4 + [1024] * 23 + [2048] * 3
    by_hand = sum((2 * c * (c // 4) + 3 * (c // 4)) -
                  (2 * c * (c // 16) + 3 * (c // 16)) for c in blocks)
    assert per_ratio == {'r101': by_hand, 'x101-32x4d': by_hand} == {
        'r101': 14_173_632, 'x101-32x4d': 14_173_632}
    paper = {row.row: row.params for row in PAPER_PARAMS
             if row.source == 'Table 3'}
    low = ((paper['R101 Mask, +GC r4'] - 0.05) -
           (paper['R101 Mask, +GC r16'] + 0.05))
    assert not low <= by_hand / 1e6  # no model prints both R-101 figures


def test_video_gc_all_is_mmcv_layout_less_the_inert_mask_biases():
    """With mmcv's layout (conv_mask with its bias) GC in all 13 residual
    blocks of c3-c5 has 42.455005M, which prints as 42.46M; the paper's
    figure is the block without the 13 biases, which change no output."""
    config = VID + 'r50-in1k-pre-gcb-r4-c3-c5' + VID_SUFFIX
    params = summary(config).params
    assert params + 13 == 42_455_005
    paper, = [row.params for row in PAPER_PARAMS if row.config == config]
    assert round((params + 13) / 1e6, 2) != paper == round(params / 1e6, 2)


SLIDES = [row for row in PAPER_PARAMS if row.source == 'GCNet slides']


def _on_mmseg_backbone(config: str) -> str:
    """The config of the same head on mmseg's R-101-D8 (no '-stem128')."""
    name = osp.basename(config).replace('-stem128', '')
    found, = [c for c in _configs('segmentation') if osp.basename(c) == name]
    return found


@pytest.mark.parametrize('row', SLIDES[1:], ids=_row_id)
def test_segmentation_head_sizes_match_slides(row):
    """The slides' network has a deeper stem and a wider auxiliary head than
    mmseg's R-101-D8 (the '-stem128' configs); on mmseg's backbone each head
    adds to the FCN baseline what the slides' figures say it adds."""
    baseline = SLIDES[0]
    assert baseline.row.startswith('baseline')
    delta = (summary(_on_mmseg_backbone(row.config)).params -
             summary(_on_mmseg_backbone(baseline.config)).params) / 1e6
    assert round(delta, 2) == round(row.params - baseline.params, 2), delta


def test_imagenet_stage2_loads_stage1():
    """Every stage-2 model holds every stage-1 weight, same shape."""
    stage1 = summary(CLS + '_8xb64-coslr-120e_in1k.py').shapes
    for name in _configs('classification'):
        shapes = summary(name).shapes
        assert {k: shapes.get(k) for k in stage1} == stage1, name
    cfg = Config.fromfile(_config_path(CLS + '-gcb-r16-c3-c5_8xb64-ft-'
                                       'coslr-40e_in1k.py'))
    assert cfg.load_from.endswith(
        'resnet50_8xb64-coslr-120e_in1k/epoch_120.pth')
    assert cfg.train_cfg.max_epochs == 40
    assert cfg.optim_wrapper.optimizer.lr == 0.02


# --- tiny forwards --------------------------------------------------------


def _count_block_calls(model):
    calls = []
    for module in model.modules():
        if type(module).__module__.startswith('gcnet_mm.models.blocks'):
            module.register_forward_hook(lambda *args: calls.append(1))
    return calls


@pytest.mark.parametrize('name', [
    DET + 'mask-rcnn_r50-syncbn-gcb-r16-c3-c5_fpn_1x_coco.py',
    DET_PAPER + 'nl-c4-1blk_fpn_1x_coco.py',
])
def test_detection_forward(name):
    from mmdet.structures import DetDataSample
    torch.manual_seed(0)
    model = build_model(name).eval()
    calls = _count_block_calls(model)
    meta = dict(img_shape=(64, 64), ori_shape=(64, 64), pad_shape=(64, 64),
                batch_input_shape=(64, 64), scale_factor=(1., 1.))
    with torch.no_grad():
        results = model.predict(
            torch.rand(1, 3, 64, 64), [DetDataSample(metainfo=meta)])
    assert len(calls) == len(summary(name).blocks)
    assert results[0].pred_instances.bboxes.shape[-1] == 4


def test_segmentation_forward():
    name = 'segmentation/gcnet/gcnet_r50-d8_4xb4-20k_voc12aug-512x512.py'
    torch.manual_seed(0)
    model = build_model(name).eval()
    calls = _count_block_calls(model)
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 64), mode='tensor')
    assert calls == [1]  # the GC-Head's gc_block
    assert logits.shape == (1, 21, 8, 8)
    assert torch.isfinite(logits).all()


def test_classification_forward():
    name = CLS + '-nl-c4-1blk_8xb64-ft-coslr-40e_in1k.py'
    torch.manual_seed(0)
    model = build_model(name).eval()
    calls = _count_block_calls(model)
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 64), mode='tensor')
    assert calls == [1]
    assert logits.shape == (1, 1000)
    assert torch.isfinite(logits).all()


def test_recognition_forward():
    name = VID + 'r50-in1k-pre-gcb-r4-c3-c5' + VID_SUFFIX
    torch.manual_seed(0)
    model = build_model(name).eval()
    calls = _count_block_calls(model)
    with torch.no_grad():  # (N, clips, C, T, H, W)
        feats = model(torch.rand(1, 1, 3, 4, 32, 32), mode='tensor')
        scores = model.cls_head(feats)
    assert len(calls) == 13  # every residual block of c3-c5
    assert scores.shape == (1, 400) and torch.isfinite(scores).all()


def _inflated_state(name: str, checkpoint_2d: str, seed: int) -> dict:
    """The model of a video config, initialised by mmaction2's inflation of
    the 2-D checkpoint (the configs' ``pretrained``, here a local file)."""
    from mmaction.registry import MODELS
    from mmengine.logging import MMLogger
    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(_config_path(name))
    cfg.model.backbone.pretrained = checkpoint_2d
    torch.manual_seed(seed)  # whatever is not inflated differs per model
    with DefaultScope.overwrite_default_scope('mmaction'):
        model = MODELS.build(cfg.model)
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel('ERROR')  # mmaction2 names the NL convs it cannot inflate
    try:
        model.init_weights()
    finally:
        logger.setLevel(level)
    return model.state_dict()


def test_video_models_inflate_from_2d_imagenet_weights(tmp_path):
    """Every backbone weight of every Table 5 model comes from a 2-D
    ResNet-50 checkpoint (torchvision's layout, the configs' ``pretrained``)
    but the new blocks', which start as the identity."""
    torchvision = pytest.importorskip('torchvision')
    from conftest import randomize_
    state_2d = randomize_(torchvision.models.resnet50()).state_dict()
    path = str(tmp_path / 'resnet50_2d.pth')
    torch.save(state_2d, path)
    base = {k: v for k, v in _inflated_state(
        VID + 'imagenet-pretrained-r50' + VID_SUFFIX, path, 0).items()
            if k.startswith('backbone.') and 'num_batches' not in k}
    assert torch.equal(base['backbone.layer1.0.conv1.bn.running_var'],
                       state_2d['layer1.0.bn1.running_var'])
    for seed, name in enumerate(_configs('recognition'), 1):
        state = _inflated_state(name, path, seed)
        differ = [k for k in base if not torch.equal(state[k], base[k])]
        assert not differ, (name, differ[:3])
        new = {k for k in state if k.startswith('backbone.')} - set(
            base) - {k for k in state if 'num_batches' in k}
        kinds = {k.split('.')[3] for k in new}  # backbone.layer2.1.<block>
        assert kinds <= {'context_block', 'snl_block', 'nonlocal_block'}
        assert bool(new) == ('imagenet-pretrained' not in name), name
        for k in new:  # the identity at init: last layer zero
            if k.endswith(('context_block.channel_add_conv.3.weight',
                           'snl_block.channel_add_conv.0.weight',
                           'nonlocal_block.conv_out.bn.weight')):
                assert not state[k].any(), k


# --- model index ------------------------------------------------------------


def test_model_index_lists_every_config():
    """model-index.yml's metafiles list every config once, with the
    parameter count of the model it builds."""
    listed = []
    for model in load_models():
        config = model['Config']
        assert config.startswith('configs/'), config
        assert (CONFIGS / config[len('configs/'):]).is_file(), config
        assert model['Name'] == osp.basename(config)[:-3]
        assert model['Metadata']['Parameters'] == summary(
            config[len('configs/'):]).params, config
        listed.append(config[len('configs/'):])
    assert sorted(listed) == sorted(set(listed))  # no duplicates
    assert sorted(listed) == sorted(ALL_CONFIGS)
