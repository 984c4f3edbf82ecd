# -*- coding: utf-8 -*-
"""facedetect: face_recognition 1.3.0's API on a Rust port of dlib's models, with dlib's numbers.

``import facedetect as face_recognition`` replaces ``import face_recognition``; the modules
``api``, ``face_recognition_cli`` and ``face_detection_cli`` mirror face_recognition's.
"""

__author__ = """concrexit-facedetection"""
__version__ = '0.1.0'

from .api import load_image_file, face_locations, batch_face_locations, face_landmarks, face_encodings, compare_faces, face_distance

__all__ = ["load_image_file", "face_locations", "batch_face_locations", "face_landmarks", "face_encodings",
           "compare_faces", "face_distance"]
