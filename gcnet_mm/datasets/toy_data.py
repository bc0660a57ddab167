"""Tiny synthetic datasets written in the real on-disk formats.

Each ``make_*`` function draws simple shapes (ellipses, boxes, triangles,
octagons) on a smooth noisy background and writes images plus annotations in
exactly the layout the upstream dataset class reads, so the package's toy
configs can train and evaluate end to end with no downloaded data:

``coco``
    ``annotations/instances_{train,val}2017.json``,
    ``{train,val}2017/*.jpg``; read by ``mmdet.CocoDataset``
    (+ ``CocoMetric`` bbox, segm)
``cityscapes``
    ``leftImg8bit/{train,val}/<city>/``, ``gtFine/{train,val}/<city>/``;
    read by ``mmseg.CityscapesDataset``
``ade20k``
    ``ADEChallengeData2016/{images,annotations}/{training,validation}``;
    read by ``mmseg.ADE20KDataset`` (``reduce_zero_label=True``)
``voc12aug``
    ``VOCdevkit/VOC2012/{JPEGImages,SegmentationClass{,Aug},ImageSets}``;
    read by ``mmseg.PascalVOCDataset`` (+ the ConcatDataset of mmseg's
    ``voc12_aug.py``)
``imagenet``
    ``{train/<wnid>,val}/*.JPEG``, ``meta/{train,val}.txt``; read by
    ``mmpretrain.ImageNet``
``kinetics``
    ``videos_{train,val}/*.mp4``, ``kinetics400_{train,val}_list_videos.txt``;
    read by ``mmaction.VideoDataset`` (+ ``AccMetric``)

The class of every object fixes its shape and (up to a little jitter) its
colour, and every mask is exactly the drawn polygon, so a model can learn the
task and ground truth evaluated as predictions scores perfectly.  Everything is
deterministic given ``seed``.  Only numpy and Pillow are needed (and OpenCV,
mmcv's, to encode the videos).
"""
import json
import os
import os.path as osp
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2  # mmcv's OpenCV, with its MPEG-4 encoder
import numpy as np
from mmengine.utils import ProgressBar
from PIL import Image, ImageDraw

__all__ = [
    'COCO_CATEGORIES', 'TOY_COCO_CLASSES', 'IMAGENET_TOY_WNIDS', 'make_coco',
    'make_cityscapes', 'make_ade20k', 'make_voc12aug', 'make_imagenet',
    'make_kinetics', 'make_all', 'TOY_DATASETS'
]

# The 80 COCO instance categories as (id, name, supercategory); ids are the
# sparse official ones (1..90), names as in instances_*2017.json.
COCO_CATEGORIES: List[Tuple[int, str, str]] = [
    (1, 'person', 'person'), (2, 'bicycle', 'vehicle'),
    (3, 'car', 'vehicle'), (4, 'motorcycle', 'vehicle'),
    (5, 'airplane', 'vehicle'), (6, 'bus', 'vehicle'),
    (7, 'train', 'vehicle'), (8, 'truck', 'vehicle'), (9, 'boat', 'vehicle'),
    (10, 'traffic light', 'outdoor'), (11, 'fire hydrant', 'outdoor'),
    (13, 'stop sign', 'outdoor'), (14, 'parking meter', 'outdoor'),
    (15, 'bench', 'outdoor'), (16, 'bird', 'animal'), (17, 'cat', 'animal'),
    (18, 'dog', 'animal'), (19, 'horse', 'animal'), (20, 'sheep', 'animal'),
    (21, 'cow', 'animal'), (22, 'elephant', 'animal'),
    (23, 'bear', 'animal'), (24, 'zebra', 'animal'),
    (25, 'giraffe', 'animal'), (27, 'backpack', 'accessory'),
    (28, 'umbrella', 'accessory'), (31, 'handbag', 'accessory'),
    (32, 'tie', 'accessory'), (33, 'suitcase', 'accessory'),
    (34, 'frisbee', 'sports'), (35, 'skis', 'sports'),
    (36, 'snowboard', 'sports'), (37, 'sports ball', 'sports'),
    (38, 'kite', 'sports'), (39, 'baseball bat', 'sports'),
    (40, 'baseball glove', 'sports'), (41, 'skateboard', 'sports'),
    (42, 'surfboard', 'sports'), (43, 'tennis racket', 'sports'),
    (44, 'bottle', 'kitchen'), (46, 'wine glass', 'kitchen'),
    (47, 'cup', 'kitchen'), (48, 'fork', 'kitchen'), (49, 'knife', 'kitchen'),
    (50, 'spoon', 'kitchen'), (51, 'bowl', 'kitchen'),
    (52, 'banana', 'food'), (53, 'apple', 'food'), (54, 'sandwich', 'food'),
    (55, 'orange', 'food'), (56, 'broccoli', 'food'), (57, 'carrot', 'food'),
    (58, 'hot dog', 'food'), (59, 'pizza', 'food'), (60, 'donut', 'food'),
    (61, 'cake', 'food'), (62, 'chair', 'furniture'),
    (63, 'couch', 'furniture'), (64, 'potted plant', 'furniture'),
    (65, 'bed', 'furniture'), (67, 'dining table', 'furniture'),
    (70, 'toilet', 'furniture'), (72, 'tv', 'electronic'),
    (73, 'laptop', 'electronic'), (74, 'mouse', 'electronic'),
    (75, 'remote', 'electronic'), (76, 'keyboard', 'electronic'),
    (77, 'cell phone', 'electronic'), (78, 'microwave', 'appliance'),
    (79, 'oven', 'appliance'), (80, 'toaster', 'appliance'),
    (81, 'sink', 'appliance'), (82, 'refrigerator', 'appliance'),
    (84, 'book', 'indoor'), (85, 'clock', 'indoor'), (86, 'vase', 'indoor'),
    (87, 'scissors', 'indoor'), (88, 'teddy bear', 'indoor'),
    (89, 'hair drier', 'indoor'), (90, 'toothbrush', 'indoor')
]

# The categories that actually occur: COCO id -> (shape, RGB colour).
TOY_COCO_CLASSES: Dict[int, Tuple[str, Tuple[int, int, int]]] = {
    1: ('ellipse', (220, 40, 40)),  # person
    3: ('box', (40, 90, 220)),  # car
    13: ('octagon', (230, 200, 30)),  # stop sign
    18: ('triangle', (40, 180, 70)),  # dog
}

# ImageNet-1k synsets 0..4 in the standard (sorted wnid) order, so the toy
# labels are the real ImageNet-1k indices: tench, goldfish, great white shark,
# tiger shark, hammerhead.
IMAGENET_TOY_WNIDS: List[str] = [
    'n01440764', 'n01443537', 'n01484850', 'n01491361', 'n01494475'
]
_IMAGENET_SHAPES = ['ellipse', 'box', 'triangle', 'octagon', 'diamond']
_IMAGENET_COLOURS = [(220, 40, 40), (40, 90, 220), (40, 180, 70),
                     (230, 200, 30), (160, 60, 200)]

# Cityscapes: trainId -> labelId (the official ``cityscapesscripts`` table).
_CITYSCAPES_TRAINID_TO_ID = [
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33
]
_CITYSCAPES_PALETTE = [
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156),
    (190, 153, 153), (153, 153, 153), (250, 170, 30), (220, 220, 0),
    (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100),
    (0, 0, 230), (119, 11, 32)
]
# VOC colour map (the standard bit-interleaved palette of the devkit).


def _voc_palette(n: int = 256) -> List[int]:
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


_VOC_PALETTE = _voc_palette()


# --------------------------------------------------------------------------
# drawing helpers
# --------------------------------------------------------------------------
def _check_args(num_train: int, num_val: int, image_size: Sequence[int],
                min_side: int = 32) -> Tuple[int, int]:
    for name, value in (('num_train', num_train), ('num_val', num_val)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f'{name} must be a positive int, but got {value!r}')
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or not all(isinstance(s, int) for s in image_size)):
        raise TypeError('image_size must be a (height, width) pair of ints, '
                        f'but got {image_size!r}')
    h, w = image_size
    if h < min_side or w < min_side:
        raise ValueError(f'image_size must be at least {min_side}x{min_side}'
                         f' (height, width), but got {tuple(image_size)}')
    return h, w


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth random colour gradient with mild noise, (H, W, 3) uint8."""
    corners = rng.uniform(60, 200, size=(2, 2, 3))
    ys = np.linspace(0, 1, h)[:, None, None]
    xs = np.linspace(0, 1, w)[None, :, None]
    img = (corners[0, 0] * (1 - ys) * (1 - xs) + corners[0, 1] * (1 - ys) * xs
           + corners[1, 0] * ys * (1 - xs) + corners[1, 1] * ys * xs)
    img = img + rng.normal(0, 6, size=(h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(shape: str, cx: float, cy: float, rx: float, ry: float,
             angle: float) -> List[Tuple[float, float]]:
    """Vertices of ``shape`` centred at (cx, cy) with half-sizes (rx, ry)."""
    if shape == 'ellipse':
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = np.stack([rx * np.cos(t), ry * np.sin(t)], 1)
    elif shape == 'box':
        pts = np.array([[-rx, -ry], [rx, -ry], [rx, ry], [-rx, ry]])
    elif shape == 'triangle':
        pts = np.array([[0, -ry], [rx, ry], [-rx, ry]])
    elif shape == 'octagon':
        t = np.linspace(0, 2 * np.pi, 8, endpoint=False) + np.pi / 8
        pts = np.stack([rx * np.cos(t), ry * np.sin(t)], 1)
    elif shape == 'diamond':
        pts = np.array([[0, -ry], [rx, 0], [0, ry], [-rx, 0]])
    else:
        raise ValueError(f'unknown shape {shape!r}')
    c, s = np.cos(angle), np.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]])
    return [(float(cx + x), float(cy + y)) for x, y in pts]


def _jitter(rng: np.random.Generator,
            colour: Sequence[int],
            amount: int = 20) -> Tuple[int, int, int]:
    c = np.asarray(colour) + rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _place_objects(rng: np.random.Generator,
                   h: int,
                   w: int,
                   shapes: Sequence[str],
                   num: int,
                   min_frac: float = 0.12,
                   max_frac: float = 0.3,
                   tries: int = 50) -> List[Tuple[int, list]]:
    """Non-overlapping polygons: a list of (shape index, vertices).

    Objects are placed by rejection sampling so that their bounding boxes
    (plus a 2 px margin) never overlap; every vertex lies inside the image.
    At least one object is always returned.
    """
    placed: List[Tuple[int, list]] = []
    boxes: List[Tuple[float, float, float, float]] = []
    side = min(h, w)
    for _ in range(num):
        for _ in range(tries):
            k = int(rng.integers(len(shapes)))
            rx = rng.uniform(min_frac, max_frac) * side / 2 * 2
            ry = rx * rng.uniform(0.7, 1.3)
            rx, ry = min(rx, w / 2 - 3), min(ry, h / 2 - 3)
            angle = rng.uniform(-0.3, 0.3) if shapes[k] != 'box' else 0.0
            r = max(rx, ry) + 2
            cx = rng.uniform(r, w - r) if w - 2 * r > 0 else w / 2
            cy = rng.uniform(r, h - r) if h - 2 * r > 0 else h / 2
            pts = _polygon(shapes[k], cx, cy, rx, ry, angle)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            box = (min(xs) - 2, min(ys) - 2, max(xs) + 2, max(ys) + 2)
            if box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h:
                continue
            if any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3]
                   and b[1] < box[3] for b in boxes):
                continue
            placed.append((k, pts))
            boxes.append(box)
            break
    if not placed:  # a guaranteed fit: one centred object
        k = int(rng.integers(len(shapes)))
        placed.append(
            (k, _polygon(shapes[k], w / 2, h / 2, w / 5, h / 5, 0.0)))
    return placed


def _polygon_area(pts: Sequence[Tuple[float, float]]) -> float:
    x = np.array([p[0] for p in pts])
    y = np.array([p[1] for p in pts])
    return float(
        0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _progress(total: int, enabled: bool) -> Optional[object]:
    if not enabled:
        return None
    return ProgressBar(total)


def _tick(bar: Optional[object]) -> None:
    if bar is not None:
        bar.update()


def _mkdir(*parts: str) -> str:
    path = osp.join(*parts)
    os.makedirs(path, exist_ok=True)
    return path


# --------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------
def make_coco(root: str,
              num_train: int = 8,
              num_val: int = 4,
              image_size: Tuple[int, int] = (160, 192),
              seed: int = 0,
              max_objects: int = 4,
              progress: bool = False) -> Dict[str, str]:
    """Write a tiny COCO instances dataset (boxes + polygon masks).

    Layout (as in COCO 2017)::

        root/annotations/instances_train2017.json
        root/annotations/instances_val2017.json
        root/train2017/000000000001.jpg ...
        root/val2017/000000100001.jpg ...

    Every image holds 1 to ``max_objects`` non-overlapping objects of the
    classes in :data:`TOY_COCO_CLASSES` (person, car, stop sign, dog; shape
    and colour fixed per class).  ``categories`` lists all 80 COCO categories
    with their official sparse ids so that ``mmdet.datasets.CocoDataset``'s
    default metainfo applies unchanged.  Annotations carry a polygon
    ``segmentation``, ``bbox`` (x, y, w, h of the polygon), ``area`` (polygon
    area) and ``iscrowd=0``.

    Args:
        root (str): Output directory; created if missing, files overwritten.
        num_train (int): Number of training images. Defaults to 8.
        num_val (int): Number of validation images. Defaults to 4.
        image_size (tuple[int, int]): (height, width) of every image.
            Defaults to (160, 192).
        seed (int): Random seed; the output is a function of it.
            Defaults to 0.
        max_objects (int): Most objects per image. Defaults to 4.
        progress (bool): Show a progress bar. Defaults to False.

    Returns:
        dict[str, str]: Paths of the written annotation files and image
        folders (keys ``train_ann``, ``val_ann``, ``train_img``, ``val_img``).
    """
    h, w = _check_args(num_train, num_val, image_size)
    if not isinstance(max_objects, int) or max_objects < 1:
        raise ValueError(
            f'max_objects must be a positive int, but got {max_objects!r}')
    rng = np.random.default_rng(seed)
    cat_ids = sorted(TOY_COCO_CLASSES)
    shapes = [TOY_COCO_CLASSES[c][0] for c in cat_ids]
    categories = [
        dict(supercategory=sup, id=cid, name=name)
        for cid, name, sup in COCO_CATEGORIES
    ]
    _mkdir(root, 'annotations')
    out = {}
    bar = _progress(num_train + num_val, progress)
    ann_id = 1
    for split, num, first_id in (('train', num_train, 1),
                                 ('val', num_val, 100001)):
        img_dir = _mkdir(root, f'{split}2017')
        images, annotations = [], []
        for i in range(num):
            img_id = first_id + i
            file_name = f'{img_id:012d}.jpg'
            canvas = Image.fromarray(_background(rng, h, w))
            draw = ImageDraw.Draw(canvas)
            objs = _place_objects(rng, h, w, shapes,
                                  int(rng.integers(1, max_objects + 1)))
            for k, pts in objs:
                cid = cat_ids[k]
                draw.polygon(pts, fill=_jitter(rng, TOY_COCO_CLASSES[cid][1]))
                xs, ys = [p[0] for p in pts], [p[1] for p in pts]
                x0, y0 = min(xs), min(ys)
                annotations.append(
                    dict(
                        id=ann_id,
                        image_id=img_id,
                        category_id=cid,
                        segmentation=[[round(v, 2) for p in pts for v in p]],
                        area=round(_polygon_area(pts), 2),
                        bbox=[
                            round(x0, 2),
                            round(y0, 2),
                            round(max(xs) - x0, 2),
                            round(max(ys) - y0, 2)
                        ],
                        iscrowd=0))
                ann_id += 1
            canvas.save(osp.join(img_dir, file_name), quality=95)
            images.append(
                dict(
                    id=img_id,
                    file_name=file_name,
                    height=h,
                    width=w,
                    license=1,
                    date_captured='2017-01-01 00:00:00'))
            _tick(bar)
        ann_file = osp.join(root, 'annotations', f'instances_{split}2017.json')
        with open(ann_file, 'w') as f:
            json.dump(
                dict(
                    info=dict(
                        description='gcnet_mm synthetic toy COCO',
                        version='1.0',
                        year=2017),
                    licenses=[dict(id=1, name='CC0', url='')],
                    images=images,
                    annotations=annotations,
                    categories=categories), f)
        out[f'{split}_ann'] = ann_file
        out[f'{split}_img'] = img_dir
    return out


# --------------------------------------------------------------------------
# semantic segmentation
# --------------------------------------------------------------------------
def _draw_scene(rng: np.random.Generator, h: int, w: int,
                stuff: Sequence[Tuple[int, Tuple[int, int, int]]],
                things: Sequence[Tuple[int, str, Tuple[int, int, int]]],
                max_objects: int, fill_label: int,
                ignore: Optional[int] = None) -> Tuple[Image.Image,
                                                       np.ndarray]:
    """An image and its label map: horizontal stuff bands, then things.

    Args:
        stuff: (label, colour) bands from top to bottom, random heights.
        things: (label, shape, colour) object classes.
        max_objects: most things per image (at least one is drawn).
        fill_label: label of pixels not covered by anything (unused when
            ``stuff`` is given, kept for the empty case).
        ignore: if given, a thin band of this label is drawn at the top.
    """
    img = _background(rng, h, w)
    label = np.full((h, w), fill_label, dtype=np.uint8)
    if stuff:
        cuts = np.sort(rng.uniform(0.2, 0.8, size=len(stuff) - 1)) * h
        edges = [0] + [int(c) for c in cuts] + [h]
        for (lab, colour), y0, y1 in zip(stuff, edges[:-1], edges[1:]):
            band = _jitter(rng, colour, 10)
            img[y0:y1] = (0.6 * np.asarray(band) +
                          0.4 * img[y0:y1]).astype(np.uint8)
            label[y0:y1] = lab
    canvas = Image.fromarray(img)
    lab_img = Image.fromarray(label)
    draw, ldraw = ImageDraw.Draw(canvas), ImageDraw.Draw(lab_img)
    objs = _place_objects(rng, h, w, [t[1] for t in things],
                          int(rng.integers(1, max_objects + 1)))
    for k, pts in objs:
        lab, _, colour = things[k]
        draw.polygon(pts, fill=_jitter(rng, colour))
        ldraw.polygon(pts, fill=int(lab))
    label = np.asarray(lab_img).copy()
    if ignore is not None:
        label[:max(1, h // 32)] = ignore
    return canvas, label


def make_cityscapes(root: str,
                    num_train: int = 4,
                    num_val: int = 2,
                    image_size: Tuple[int, int] = (128, 256),
                    seed: int = 0,
                    max_objects: int = 4,
                    progress: bool = False) -> Dict[str, str]:
    """Write a tiny Cityscapes (fine) dataset with train-id label maps.

    Layout (as produced by ``cityscapesscripts`` + mmseg's
    ``tools/dataset_converters/cityscapes.py``)::

        root/leftImg8bit/{train,val}/<city>/<city>_000000_0000NN_leftImg8bit.png
        root/gtFine/{train,val}/<city>/<city>_000000_0000NN_gtFine_labelTrainIds.png
        root/gtFine/{train,val}/<city>/<city>_000000_0000NN_gtFine_labelIds.png

    Label maps use the 19 train ids (0 road ... 18 bicycle) with 255 for
    ignored pixels (a thin band at the top of every image); the
    ``labelIds`` twin uses the official ids (0 for ignored).  Scenes are sky /
    building / road bands with cars (boxes), persons (ellipses) and traffic
    signs (triangles) in the Cityscapes palette colours.

    Args:
        root (str): Output directory; created if missing.
        num_train (int): Number of training images. Defaults to 4.
        num_val (int): Number of validation images. Defaults to 2.
        image_size (tuple[int, int]): (height, width). Defaults to (128, 256)
            (the 1:2 aspect of Cityscapes).
        seed (int): Random seed. Defaults to 0.
        max_objects (int): Most objects per image. Defaults to 4.
        progress (bool): Show a progress bar. Defaults to False.

    Returns:
        dict[str, str]: ``img_dir`` and ``ann_dir`` (relative to ``root``,
        as mmseg's ``data_prefix`` wants them) and ``root``.
    """
    h, w = _check_args(num_train, num_val, image_size)
    rng = np.random.default_rng(seed)
    pal = _CITYSCAPES_PALETTE
    stuff = [(10, pal[10]), (2, pal[2]), (0, pal[0])]  # sky, building, road
    things = [(13, 'box', pal[13]), (11, 'ellipse', pal[11]),
              (7, 'triangle', pal[7])]  # car, person, traffic sign
    to_id = np.zeros(256, dtype=np.uint8)
    to_id[:19] = _CITYSCAPES_TRAINID_TO_ID
    bar = _progress(num_train + num_val, progress)
    for split, num, city in (('train', num_train, 'toytrain'),
                             ('val', num_val, 'toyval')):
        img_dir = _mkdir(root, 'leftImg8bit', split, city)
        ann_dir = _mkdir(root, 'gtFine', split, city)
        for i in range(num):
            stem = f'{city}_000000_{i:06d}'
            img, label = _draw_scene(rng, h, w, stuff, things, max_objects,
                                     fill_label=0, ignore=255)
            img.save(osp.join(img_dir, f'{stem}_leftImg8bit.png'))
            Image.fromarray(label).save(
                osp.join(ann_dir, f'{stem}_gtFine_labelTrainIds.png'))
            Image.fromarray(to_id[label]).save(
                osp.join(ann_dir, f'{stem}_gtFine_labelIds.png'))
            _tick(bar)
    return dict(root=root, img_dir='leftImg8bit', ann_dir='gtFine')


def make_ade20k(root: str,
                num_train: int = 4,
                num_val: int = 2,
                image_size: Tuple[int, int] = (128, 128),
                seed: int = 0,
                max_objects: int = 4,
                progress: bool = False) -> Dict[str, str]:
    """Write a tiny ADE20K (SceneParsing, ADEChallengeData2016) dataset.

    Layout::

        root/ADEChallengeData2016/images/{training,validation}/ADE_{train,val}_000000NN.jpg
        root/ADEChallengeData2016/annotations/{training,validation}/ADE_{train,val}_000000NN.png

    Annotations hold the raw ADE values: 0 is "other" and 1..150 the classes
    (1 wall, 4 floor, 6 ceiling, 8 bed, 13 person, 16 table).  mmseg's
    ``ADE20KDataset`` reads them with ``reduce_zero_label=True``: 0 becomes
    255 (ignored) and k becomes k - 1.  Every image contains some 0 pixels
    (a band at the top), so the reduction is exercised.

    Args:
        root (str): Output directory (the parent of
            ``ADEChallengeData2016``); created if missing.
        num_train (int): Number of training images. Defaults to 4.
        num_val (int): Number of validation images. Defaults to 2.
        image_size (tuple[int, int]): (height, width). Defaults to (128, 128).
        seed (int): Random seed. Defaults to 0.
        max_objects (int): Most objects per image. Defaults to 4.
        progress (bool): Show a progress bar. Defaults to False.

    Returns:
        dict[str, str]: ``root`` (the ``ADEChallengeData2016`` folder, mmseg's
        ``data_root``), ``img_dir`` and ``ann_dir`` prefixes of the training
        split.
    """
    h, w = _check_args(num_train, num_val, image_size)
    rng = np.random.default_rng(seed)
    base = osp.join(root, 'ADEChallengeData2016')
    stuff = [(6, (120, 120, 80)), (1, (120, 120, 120)), (4, (80, 50, 50))]
    things = [(8, 'box', (204, 5, 255)), (13, 'ellipse', (150, 5, 61)),
              (16, 'octagon', (255, 6, 82))]
    bar = _progress(num_train + num_val, progress)
    for split, num, tag in (('training', num_train, 'train'),
                            ('validation', num_val, 'val')):
        img_dir = _mkdir(base, 'images', split)
        ann_dir = _mkdir(base, 'annotations', split)
        for i in range(num):
            stem = f'ADE_{tag}_{i + 1:08d}'
            img, label = _draw_scene(rng, h, w, stuff, things, max_objects,
                                     fill_label=0, ignore=0)
            img.save(osp.join(img_dir, f'{stem}.jpg'), quality=95)
            Image.fromarray(label).save(osp.join(ann_dir, f'{stem}.png'))
            _tick(bar)
    return dict(
        root=base, img_dir='images/training', ann_dir='annotations/training')


def make_voc12aug(root: str,
                  num_train: int = 4,
                  num_val: int = 2,
                  image_size: Tuple[int, int] = (128, 128),
                  seed: int = 0,
                  max_objects: int = 3,
                  num_aug_only: Optional[int] = None,
                  progress: bool = False) -> Dict[str, str]:
    """Write a tiny PASCAL VOC 2012 + SBD ("aug") segmentation dataset.

    Layout (VOC devkit plus mmseg's ``tools/dataset_converters/voc_aug.py``
    output)::

        root/VOCdevkit/VOC2012/JPEGImages/2007_0000NN.jpg
        root/VOCdevkit/VOC2012/SegmentationClass/*.png      (palette PNG)
        root/VOCdevkit/VOC2012/SegmentationClassAug/*.png   (grey PNG)
        root/VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,aug}.txt

    ``SegmentationClass`` exists for the VOC train + val images and, like the
    real one, is a palette PNG with 255 on a 2 px boundary around every
    object.  ``SegmentationClassAug`` (SBD, no boundaries) covers the train
    images plus ``num_aug_only`` extra SBD-only images; ``aug.txt`` lists
    those train-aug images (never a val image), so mmseg's ``voc12_aug.py``
    pattern ``ConcatDataset([train.txt on SegmentationClass, aug.txt on
    SegmentationClassAug])`` works.  Labels: 0 background, 1..20 the VOC
    classes (here 1 aeroplane, 8 cat, 12 dog, 15 person, 20 tvmonitor).

    Args:
        root (str): Output directory (the parent of ``VOCdevkit``).
        num_train (int): Number of VOC train images. Defaults to 4.
        num_val (int): Number of val images. Defaults to 2.
        image_size (tuple[int, int]): (height, width). Defaults to (128, 128).
        seed (int): Random seed. Defaults to 0.
        max_objects (int): Most objects per image. Defaults to 3.
        num_aug_only (int, optional): Extra images that exist only in
            ``SegmentationClassAug``. Defaults to ``num_train``.
        progress (bool): Show a progress bar. Defaults to False.

    Returns:
        dict[str, str]: ``root`` (``VOCdevkit/VOC2012``, mmseg's
        ``data_root``) and the three split files relative to it.
    """
    h, w = _check_args(num_train, num_val, image_size)
    if num_aug_only is None:
        num_aug_only = num_train
    if not isinstance(num_aug_only, int) or num_aug_only < 0:
        raise ValueError('num_aug_only must be a non-negative int, but got '
                         f'{num_aug_only!r}')
    rng = np.random.default_rng(seed)
    base = osp.join(root, 'VOCdevkit', 'VOC2012')
    img_dir = _mkdir(base, 'JPEGImages')
    cls_dir = _mkdir(base, 'SegmentationClass')
    aug_dir = _mkdir(base, 'SegmentationClassAug')
    set_dir = _mkdir(base, 'ImageSets', 'Segmentation')
    pal = _VOC_PALETTE
    things = [(1, 'triangle', tuple(pal[3:6])),
              (8, 'ellipse', tuple(pal[24:27])),
              (12, 'box', tuple(pal[36:39])),
              (15, 'octagon', tuple(pal[45:48])),
              (20, 'diamond', tuple(pal[60:63]))]
    splits: Dict[str, List[str]] = dict(train=[], val=[], aug_only=[])
    bar = _progress(num_train + num_val + num_aug_only, progress)
    idx = 0
    for split, num in (('train', num_train), ('val', num_val),
                       ('aug_only', num_aug_only)):
        for _ in range(num):
            idx += 1
            stem = f'2007_{idx:06d}'
            img, label = _draw_scene(rng, h, w, [], things, max_objects,
                                     fill_label=0)
            img.save(osp.join(img_dir, f'{stem}.jpg'), quality=95)
            Image.fromarray(label).save(osp.join(aug_dir, f'{stem}.png'))
            if split != 'aug_only':
                seg = _with_boundary(label, width=2)
                png = Image.fromarray(seg, mode='P')
                png.putpalette(pal)
                png.save(osp.join(cls_dir, f'{stem}.png'))
            splits[split].append(stem)
            _tick(bar)
    lists = dict(
        train=splits['train'],
        val=splits['val'],
        aug=splits['train'] + splits['aug_only'])
    for name, stems in lists.items():
        with open(osp.join(set_dir, f'{name}.txt'), 'w') as f:
            f.write(''.join(s + '\n' for s in stems))
    return dict(
        root=base,
        train='ImageSets/Segmentation/train.txt',
        val='ImageSets/Segmentation/val.txt',
        aug='ImageSets/Segmentation/aug.txt')


def _with_boundary(label: np.ndarray, width: int = 2) -> np.ndarray:
    """Mark pixels within ``width`` of a label change as 255 (VOC style)."""
    lab = label.astype(np.int32)
    edge = np.zeros(lab.shape, dtype=bool)
    edge[:, 1:] |= lab[:, 1:] != lab[:, :-1]
    edge[1:, :] |= lab[1:, :] != lab[:-1, :]
    grown = edge.copy()
    for _ in range(width - 1):
        g = grown.copy()
        g[1:] |= grown[:-1]
        g[:-1] |= grown[1:]
        g[:, 1:] |= grown[:, :-1]
        g[:, :-1] |= grown[:, 1:]
        grown = g
    out = label.copy()
    out[grown] = 255
    return out


# --------------------------------------------------------------------------
# ImageNet
# --------------------------------------------------------------------------
def make_imagenet(root: str,
                  num_train: int = 4,
                  num_val: int = 2,
                  image_size: Tuple[int, int] = (64, 64),
                  seed: int = 0,
                  num_classes: int = 5,
                  progress: bool = False) -> Dict[str, str]:
    """Write a tiny ImageNet-1k style classification dataset.

    Layout (the one mmpretrain's ``ImageNet`` documents)::

        root/train/<wnid>/<wnid>_<k>.JPEG
        root/val/ILSVRC2012_val_000000NN.JPEG
        root/meta/train.txt      "<wnid>/<wnid>_<k>.JPEG <label>"
        root/meta/val.txt        "ILSVRC2012_val_000000NN.JPEG <label>"

    The classes are the first ``num_classes`` ImageNet-1k synsets
    (:data:`IMAGENET_TOY_WNIDS`) and the labels their real ImageNet-1k
    indices 0..num_classes-1, so mmpretrain's ``ImageNet`` with its default
    1000-class metainfo and a 1000-way head reads the data unchanged (no
    ``classes=`` override; with an override to these few names a
    ``num_classes``-way head works too, as the labels are 0..K-1).
    ``num_train`` and ``num_val`` are per class.  Each class is one shape in
    one colour, at a random position and size.

    Args:
        root (str): Output directory; created if missing.
        num_train (int): Training images per class. Defaults to 4.
        num_val (int): Validation images per class. Defaults to 2.
        image_size (tuple[int, int]): (height, width). Defaults to (64, 64).
        seed (int): Random seed. Defaults to 0.
        num_classes (int): Number of classes, 1 to 5. Defaults to 5.
        progress (bool): Show a progress bar. Defaults to False.

    Returns:
        dict[str, str]: ``root`` and the two ``meta`` annotation files.
    """
    h, w = _check_args(num_train, num_val, image_size)
    if (not isinstance(num_classes, int)
            or not 1 <= num_classes <= len(IMAGENET_TOY_WNIDS)):
        raise ValueError(f'num_classes must be an int in 1..'
                         f'{len(IMAGENET_TOY_WNIDS)}, but got {num_classes!r}')
    rng = np.random.default_rng(seed)
    meta = _mkdir(root, 'meta')
    val_dir = _mkdir(root, 'val')
    train_lines, val_lines = [], []
    bar = _progress(num_classes * (num_train + num_val), progress)
    val_idx = 0
    for label in range(num_classes):
        wnid = IMAGENET_TOY_WNIDS[label]
        cls_dir = _mkdir(root, 'train', wnid)
        for k in range(num_train + num_val):
            canvas = Image.fromarray(_background(rng, h, w))
            rx = rng.uniform(0.2, 0.4) * w
            ry = rng.uniform(0.2, 0.4) * h
            cx = rng.uniform(rx + 1, w - rx - 1)
            cy = rng.uniform(ry + 1, h - ry - 1)
            pts = _polygon(_IMAGENET_SHAPES[label], cx, cy, rx, ry,
                           rng.uniform(-0.2, 0.2))
            ImageDraw.Draw(canvas).polygon(
                pts, fill=_jitter(rng, _IMAGENET_COLOURS[label]))
            if k < num_train:
                name = f'{wnid}_{k + 1}.JPEG'
                canvas.save(osp.join(cls_dir, name), format='JPEG', quality=95)
                train_lines.append(f'{wnid}/{name} {label}\n')
            else:
                val_idx += 1
                name = f'ILSVRC2012_val_{val_idx:08d}.JPEG'
                canvas.save(osp.join(val_dir, name), format='JPEG', quality=95)
                val_lines.append(f'{name} {label}\n')
            _tick(bar)
    for name, lines in (('train', train_lines), ('val', val_lines)):
        with open(osp.join(meta, f'{name}.txt'), 'w') as f:
            f.write(''.join(lines))
    return dict(
        root=root,
        train_ann=osp.join('meta', 'train.txt'),
        val_ann=osp.join('meta', 'val.txt'))


# A class of the toy Kinetics set: a shape of a colour moving one way,
# (dx, dy) in frame widths/heights per clip.
_KINETICS_MOTIONS = [(0.5, 0.0), (0.0, 0.5), (-0.5, 0.0), (0.0, -0.5),
                     (0.35, 0.35)]


def make_kinetics(root: str,
                  num_train: int = 2,
                  num_val: int = 1,
                  image_size: Tuple[int, int] = (48, 64),
                  seed: int = 0,
                  num_classes: int = 3,
                  num_frames: int = 16,
                  progress: bool = False) -> Dict[str, str]:
    """Write a tiny Kinetics-400 style video classification dataset.

    Layout (the one of mmaction2's Kinetics-400 video configs)::

        root/videos_train/<label>_<k>.mp4
        root/videos_val/<label>_<k>.mp4
        root/kinetics400_train_list_videos.txt   "<label>_<k>.mp4 <label>"
        root/kinetics400_val_list_videos.txt

    Each video is ``num_frames`` frames of MPEG-4 at 8 fps in which one shape
    of the class's colour moves across the frame in the class's direction;
    labels are 0..num_classes-1, read by mmaction2's ``VideoDataset`` (with
    decord) as they are with a 400-way head. ``num_train`` and ``num_val``
    are per class.

    Args:
        root (str): Output directory; created if missing.
        num_train (int): Training videos per class. Defaults to 2.
        num_val (int): Validation videos per class. Defaults to 1.
        image_size (tuple[int, int]): Frame (height, width). Defaults to
            (48, 64).
        seed (int): Random seed. Defaults to 0.
        num_classes (int): Number of classes, 1 to 5. Defaults to 3.
        num_frames (int): Frames per video, at least 8. Defaults to 16.
        progress (bool): Show a progress bar. Defaults to False.

    Returns:
        dict[str, str]: ``root``, the two annotation lists and the two video
        folders (relative to ``root``).
    """
    h, w = _check_args(num_train, num_val, image_size)
    if (not isinstance(num_classes, int) or isinstance(num_classes, bool)
            or not 1 <= num_classes <= len(_KINETICS_MOTIONS)):
        raise ValueError(f'num_classes must be an int in 1..'
                         f'{len(_KINETICS_MOTIONS)}, but got {num_classes!r}')
    if (not isinstance(num_frames, int) or isinstance(num_frames, bool)
            or num_frames < 8):
        raise ValueError(f'num_frames must be an int >= 8, but got '
                         f'{num_frames!r}')
    rng = np.random.default_rng(seed)
    paths = dict(
        root=root,
        train_ann='kinetics400_train_list_videos.txt',
        val_ann='kinetics400_val_list_videos.txt',
        train_videos='videos_train',
        val_videos='videos_val')
    bar = _progress(num_classes * (num_train + num_val), progress)
    lines = dict(train=[], val=[])
    for label in range(num_classes):
        dx, dy = _KINETICS_MOTIONS[label]
        for k in range(num_train + num_val):
            split = 'train' if k < num_train else 'val'
            name = f'{label:03d}_{k:02d}.mp4'
            path = osp.join(_mkdir(root, paths[f'{split}_videos']), name)
            background = _background(rng, h, w)
            colour = _jitter(rng, _IMAGENET_COLOURS[label])
            r = rng.uniform(0.12, 0.2) * min(h, w)
            x0 = rng.uniform(0.3, 0.7) * w - dx * w / 2
            y0 = rng.uniform(0.3, 0.7) * h - dy * h / 2
            writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'),
                                     8, (w, h))
            if not writer.isOpened():
                raise RuntimeError(f'OpenCV cannot write MPEG-4 video to '
                                   f'{path!r}')
            for t in range(num_frames):
                frame = Image.fromarray(background)
                f = t / (num_frames - 1)
                pts = _polygon(_IMAGENET_SHAPES[label], x0 + dx * w * f,
                               y0 + dy * h * f, r, r, 0.0)
                ImageDraw.Draw(frame).polygon(pts, fill=colour)
                writer.write(np.asarray(frame)[:, :, ::-1].copy())  # BGR
            writer.release()
            lines[split].append(f'{name} {label}\n')
            _tick(bar)
    for split, text in lines.items():
        with open(osp.join(root, paths[f'{split}_ann']), 'w') as f:
            f.write(''.join(text))
    return paths


#: name -> (generator, sub-folder under ``make_all``'s root).  The sub-folders
#: mirror upstream's ``data/`` layout (``data/coco``, ``data/cityscapes``,
#: ``data/ade/ADEChallengeData2016``, ``data/VOCdevkit/VOC2012``,
#: ``data/imagenet``, ``data/kinetics400``), so a toy config only swaps the
#: ``data/`` prefix.
TOY_DATASETS: Dict[str, Tuple[Callable[..., Dict[str, str]], str]] = {
    'coco': (make_coco, 'coco'),
    'cityscapes': (make_cityscapes, 'cityscapes'),
    'ade20k': (make_ade20k, 'ade'),
    'voc12aug': (make_voc12aug, '.'),
    'imagenet': (make_imagenet, 'imagenet'),
    'kinetics': (make_kinetics, 'kinetics400'),
}


def make_all(root: str, **kwargs) -> Dict[str, Dict[str, str]]:
    """Write every toy dataset under ``root/<name>`` (see ``TOY_DATASETS``).

    Args:
        root (str): Parent output directory.
        **kwargs: Passed to every generator (``num_train``, ``num_val``,
            ``seed``, ``progress``).

    Returns:
        dict[str, dict[str, str]]: Each generator's return value by name.
    """
    return {
        name: fn(osp.normpath(osp.join(root, sub)), **kwargs)
        for name, (fn, sub) in TOY_DATASETS.items()
    }
