# -*- coding: utf-8 -*-
"""facedetect: face_recognition 1.3.0's API on a Rust port of dlib's models, with dlib's numbers.

``import facedetect as face_recognition`` replaces ``import face_recognition``; the modules
``api``, ``face_recognition_cli`` and ``face_detection_cli`` mirror face_recognition's.

The Rust work runs on a thread pool of the package's own, which a forked child (a
``multiprocessing`` fork pool, a Celery prefork worker, gunicorn ``--preload``) rebuilds on its
first call. ``set_num_threads(n)`` bounds it to ``n`` threads (``FACEDETECT_NUM_THREADS`` sets the
number at start); by default it has one thread per core the process may use (its CPU affinity
and its container's CPU quota).
"""

__author__ = """concrexit-facedetection"""
__version__ = '0.1.0'

from . import api
from .api import load_image_file, face_locations, batch_face_locations, face_landmarks, face_encodings, compare_faces, face_distance
from ._native import get_num_threads, set_num_threads

__all__ = ["api", "load_image_file", "face_locations", "batch_face_locations", "face_landmarks", "face_encodings",
           "compare_faces", "face_distance", "get_num_threads", "set_num_threads"]
