"""dlib's Python objects and models, as face_recognition uses them, on the Rust models.

The value types (``rectangle``, ``point``, ``mmod_rectangle``, ``full_object_detection`` and
their lists) have dlib's accessors; the model objects (``fhog_object_detector``,
``cnn_face_detection_model_v1``, ``shape_predictor``, ``face_recognition_model_v1``) are called
like dlib's and raise what dlib raises: ``TypeError`` for arguments of the wrong kind,
``RuntimeError`` for an image that is not 8-bit grey or RGB.
"""

import importlib.util
import operator
import os
import threading

import numpy as np

from . import _native

_UNSUPPORTED = "Unsupported image type, must be 8bit gray or RGB image."


class rectangle(object):
    """dlib's ``rectangle``: integer corners, both inclusive."""

    __slots__ = ("_left", "_top", "_right", "_bottom")

    def __init__(self, left=0, top=0, right=-1, bottom=-1):
        try:
            # Integers only (numpy's and bool too), as dlib's constructor takes them: a float
            # corner is a TypeError, not truncated.
            corners = [operator.index(corner) for corner in (left, top, right, bottom)]
        except TypeError:
            raise TypeError("__init__(): incompatible constructor arguments: rectangle(left: int, top: int, "
                            "right: int, bottom: int) takes integers, not %r" % ((left, top, right, bottom),))
        self._left, self._top, self._right, self._bottom = corners

    def left(self):
        return self._left

    def top(self):
        return self._top

    def right(self):
        return self._right

    def bottom(self):
        return self._bottom

    def width(self):
        return 0 if self.is_empty() else self._right - self._left + 1

    def height(self):
        return 0 if self.is_empty() else self._bottom - self._top + 1

    def area(self):
        return self.width() * self.height()

    def is_empty(self):
        return self._left > self._right or self._top > self._bottom

    def tl_corner(self):
        return point(self._left, self._top)

    def br_corner(self):
        return point(self._right, self._bottom)

    def center(self):
        return point((self._left + self._right + 1) // 2, (self._top + self._bottom + 1) // 2)

    def contains(self, x, y=None):
        if y is None:
            x, y = x.x, x.y
        return self._left <= x <= self._right and self._top <= y <= self._bottom

    def intersect(self, other):
        return rectangle(max(self._left, other.left()), max(self._top, other.top()),
                         min(self._right, other.right()), min(self._bottom, other.bottom()))

    def _corners(self):
        return self._left, self._top, self._right, self._bottom

    def __eq__(self, other):
        return isinstance(other, rectangle) and self._corners() == other._corners()

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return "rectangle(%d,%d,%d,%d)" % self._corners()

    def __str__(self):
        return "[(%d, %d) (%d, %d)]" % self._corners()


class point(object):
    """dlib's ``point``: integer ``x`` and ``y``."""

    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x, self.y = int(x), int(y)

    def __eq__(self, other):
        return isinstance(other, point) and (self.x, self.y) == (other.x, other.y)

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return "point(%d, %d)" % (self.x, self.y)

    def __str__(self):
        return "(%d, %d)" % (self.x, self.y)


class points(list):
    """dlib's ``points``: a list of ``point``."""

    def __repr__(self):
        return "points[%s]" % ", ".join(str(p) for p in self)


class rectangles(list):
    """dlib's ``rectangles``: a list of ``rectangle``."""


class mmod_rectangle(object):
    """dlib's ``mmod_rectangle``: a CNN detection's ``rect`` and ``confidence``."""

    __slots__ = ("rect", "confidence")

    def __init__(self, rect, confidence):
        self.rect, self.confidence = rect, confidence

    def __repr__(self):
        return "mmod_rectangle(%r, confidence=%r)" % (self.rect, self.confidence)


class mmod_rectangles(list):
    """dlib's ``mmod_rectangles``: a list of ``mmod_rectangle``."""


class full_object_detection(object):
    """dlib's ``full_object_detection``: a face's ``rect`` and its landmarks."""

    __slots__ = ("rect", "_parts")

    def __init__(self, rect, parts):
        self.rect = rect
        self._parts = points(parts)

    @property
    def num_parts(self):
        return len(self._parts)

    def part(self, idx):
        if not 0 <= idx < len(self._parts):
            raise IndexError("Index out of range")
        return self._parts[idx]

    def parts(self):
        return points(self._parts)

    def __repr__(self):
        return "full_object_detection(%r, %d parts)" % (self.rect, self.num_parts)


class full_object_detections(list):
    """dlib's ``full_object_detections``: a list of ``full_object_detection``."""


def image_argument(img, function):
    """The native form of an image, checked as dlib checks it: 8-bit, ``rows x cols`` or
    ``rows x cols x 1`` grey, or ``rows x cols x 3`` RGB."""
    if not isinstance(img, np.ndarray):
        raise TypeError("%s(): incompatible function arguments: the image must be a numpy array, not %s"
                        % (function, type(img).__name__))
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
        raise RuntimeError(_UNSUPPORTED)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    channels = 1 if img.ndim == 2 else 3
    return (np.ascontiguousarray(img).tobytes(), img.shape[0], img.shape[1], channels)


def _int_argument(value, name, function):
    """An integer argument as dlib's binding takes one: Python's and numpy's integers and
    ``bool`` (``True`` is 1), never a float."""
    if isinstance(value, np.bool_):
        return int(value)
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError("%s(): incompatible function arguments: %s must be an integer, not %r"
                        % (function, name, value))


def _upsample_argument(upsample_num_times, function):
    upsample = _int_argument(upsample_num_times, "upsample_num_times", function)
    if upsample < 0:
        raise TypeError("%s(): incompatible function arguments: upsample_num_times must be a non-negative "
                        "integer, not %r" % (function, upsample_num_times))
    return upsample


def _jitters_argument(num_jitters):
    # dlib jitters only above 1: 0, 1 and negative numbers all encode the chip as it is.
    return max(_int_argument(num_jitters, "num_jitters", "compute_face_descriptor"), 0)


def _rect_tuple(rect):
    if not isinstance(rect, rectangle):
        raise TypeError("incompatible function arguments: expected a rectangle, not %s" % type(rect).__name__)
    return rect._corners()


def model_location(name):
    """The path of one of dlib's model files in face_recognition_models (as its
    ``*_model_location()`` functions give them), or None without the package. The file is found
    without importing the package, whose import needs setuptools' pkg_resources, which newer
    environments lack."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        return None
    return os.path.join(os.path.dirname(spec.origin), "models", name)


def _dat_68():
    """dlib's 68-point model file, or None without it (the 68-point functions then raise
    RuntimeError)."""
    path = model_location("shape_predictor_68_face_landmarks.dat")
    return path if path is not None and os.path.isfile(path) else None


_models = None
_models_lock = threading.Lock()


def models():
    """The Rust models, loaded on first use from the weights inside the package
    (``FACEDETECT_WEIGHTS`` names another directory or ``hf://owner/name[@revision]``, as for
    the ``facedetect`` command)."""
    global _models
    with _models_lock:
        if _models is None:
            weights = os.environ.get("FACEDETECT_WEIGHTS") or os.path.join(os.path.dirname(__file__), "weights")
            _models = _native.Models(weights, _dat_68())
        return _models


class fhog_object_detector(object):
    """dlib's HOG frontal face detector (``dlib.get_frontal_face_detector()``)."""

    def __call__(self, image, upsample_num_times=0):
        upsample = _upsample_argument(upsample_num_times, "__call__")
        arg = image_argument(image, "__call__")
        return rectangles(rectangle(*found[:4]) for found in models().detect(arg, upsample, False))


class cnn_face_detection_model_v1(object):
    """dlib's CNN (MMOD) face detector; one image gives ``mmod_rectangles``, a list of images a
    list of them."""

    def __call__(self, img, upsample_num_times=0, batch_size=128):
        upsample = _upsample_argument(upsample_num_times, "__call__")
        if isinstance(img, list):
            batch_size = _int_argument(batch_size, "batch_size", "__call__")
            args = [image_argument(i, "__call__") for i in img]
            # Grey and RGB images may be mixed: dlib reads each as RGB.
            if len({arg[1:3] for arg in args}) > 1:
                raise RuntimeError("Images in list must all have the same dimensions.")
            if not args:
                return []
            if batch_size == 0:
                raise RuntimeError("batch_size must be at least 1: a batch of no images cannot be run")
            # dlib takes the size unsigned: a negative one is one batch of every image.
            step = batch_size if batch_size > 0 else len(args)
            found = []
            for start in range(0, len(args), step):
                found.extend(models().detect_cnn_batch(args[start:start + step], upsample))
            return [_mmod_rectangles(faces) for faces in found]
        return _mmod_rectangles(models().detect(image_argument(img, "__call__"), upsample, True))


def _mmod_rectangles(found):
    return mmod_rectangles(mmod_rectangle(rectangle(*f[:4]), f[4]) for f in found)


class shape_predictor(object):
    """dlib's shape predictor: ``small`` is the 5-point model, otherwise the 68-point one."""

    def __init__(self, small):
        self.small = small

    def __call__(self, image, box):
        return self.predict(image, [box])[0]

    def predict(self, image, boxes):
        """The landmarks of every box at once (one call into Rust)."""
        rects = [_rect_tuple(box) for box in boxes]
        if not rects:
            return full_object_detections()
        found = models().landmarks(image_argument(image, "__call__"), rects, self.small)
        return full_object_detections(
            full_object_detection(box, [point(x, y) for x, y in parts]) for box, parts in zip(boxes, found))


class face_recognition_model_v1(object):
    """dlib's face recognition ResNet: 128 numbers per face. Like dlib's, each encoder holds its
    own random generator for ``num_jitters`` and keeps it between calls."""

    def __init__(self, *args):
        self._jitters = _native.JitterGenerator()

    def compute_face_descriptor(self, *args, **kwargs):
        """dlib's overloads: ``(img, face, num_jitters=0, padding=0.25)`` gives the face's 128
        numbers (a float64 array), ``(img, faces, ...)`` those of each face of a
        ``full_object_detections``, ``(batch_img, batch_faces, ...)`` those of each face of
        each image; ``(img, num_jitters=0)`` those of an aligned 150x150 chip (as
        ``dlib.get_face_chip`` makes it), ``(batch_img, num_jitters=0)`` those of each chip."""
        args = list(args)
        img = args.pop(0) if args else kwargs.pop("img", kwargs.pop("batch_img", None))
        if img is None:
            raise TypeError("compute_face_descriptor(): incompatible function arguments: no image")
        faces = None
        for key in ("face", "faces", "batch_faces"):
            if key in kwargs:
                faces = kwargs.pop(key)
        if faces is None and args and isinstance(args[0], (full_object_detection, list)):
            faces = args.pop(0)
        names = ["num_jitters"] if faces is None else ["num_jitters", "padding"]
        if len(args) > len(names) or set(kwargs) - set(names[len(args):]):
            raise TypeError("compute_face_descriptor(): incompatible function arguments: %r"
                            % (args[len(names):] or sorted(kwargs)))
        options = dict(zip(names, args), **kwargs)
        jitters = _jitters_argument(options.get("num_jitters", 0))
        batch = isinstance(img, list)
        if faces is None:
            found = self._chip_descriptors(img if batch else [img], jitters)
            return found if batch else found[0]
        padding = float(options.get("padding", 0.25))
        if batch:
            if len(faces) != len(img):
                raise ValueError("The array of images and the array of array of locations must be of the same size")
            return [self.compute_face_descriptors(i, f, jitters, padding) for i, f in zip(img, faces)]
        if isinstance(faces, full_object_detection):
            return self.compute_face_descriptors(img, [faces], jitters, padding)[0]
        return self.compute_face_descriptors(img, faces, jitters, padding)

    def compute_face_descriptors(self, img, faces, num_jitters=0, padding=0.25):
        """The encodings of the faces (``full_object_detection``) of one image, as float64
        arrays, each from its chip aligned on the face's landmarks, as dlib does."""
        if not faces:
            return []
        if not _is_rgb(img):
            raise TypeError("compute_face_descriptor(): incompatible function arguments: "
                            "img must be numpy.ndarray[(rows,cols,3),numpy.uint8]")
        for face in faces:
            if not isinstance(face, full_object_detection):
                raise TypeError("compute_face_descriptor(): incompatible function arguments: expected a "
                                "full_object_detection, not %s" % type(face).__name__)
        shapes = [[(p.x, p.y) for p in face.parts()] for face in faces]
        found = models().descriptors(image_argument(img, "compute_face_descriptor"), shapes,
                                     _jitters_argument(num_jitters), float(padding), self._jitters)
        return [np.array(encoding, dtype=np.float64) for encoding in found]

    def _chip_descriptors(self, chips, num_jitters):
        for chip in chips:
            if not _is_rgb(chip):
                raise TypeError("compute_face_descriptor(): incompatible function arguments: "
                                "img must be numpy.ndarray[(rows,cols,3),numpy.uint8]")
            if chip.shape[:2] != (150, 150):
                raise RuntimeError("Unsupported image size, it should be of size 150x150. Also cropping must be "
                                   "done as `dlib.get_face_chip` would do it. That is, centered and scaled "
                                   "essentially the same way.")
        if not chips:
            return []
        found = models().chip_descriptors([image_argument(chip, "compute_face_descriptor") for chip in chips],
                                          num_jitters, self._jitters)
        return [np.array(encoding, dtype=np.float64) for encoding in found]


def _is_rgb(img):
    return isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
