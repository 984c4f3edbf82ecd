# -*- coding: utf-8 -*-
"""face_recognition 1.3.0's ``face_recognition`` command: which known people are in an image.

The same arguments, options and output lines as the original. ``--cpus N`` uses N threads
(sharing one copy of the models) instead of a pool of N processes (see ``_commands``); a
folder's lines are printed in the order of the images, every good image's whatever fails, then
the first error.
"""
from __future__ import print_function
import click
import os
import re
from . import _commands
from . import api as face_recognition
import PIL.Image
import numpy as np


def scan_known_people(known_people_folder):
    known_names = []
    known_face_encodings = []

    for file in image_files_in_folder(known_people_folder):
        basename = os.path.splitext(os.path.basename(file))[0]
        img = face_recognition.load_image_file(file)
        encodings = face_recognition.face_encodings(img)

        if len(encodings) > 1:
            click.echo("WARNING: More than one face found in {}. Only considering the first face.".format(file))

        if len(encodings) == 0:
            click.echo("WARNING: No faces found in {}. Ignoring file.".format(file))
        else:
            known_names.append(basename)
            known_face_encodings.append(encodings[0])

    return known_names, known_face_encodings


def format_result(filename, name, distance, show_distance=False):
    if show_distance:
        return "{},{},{}".format(filename, name, distance)
    else:
        return "{},{}".format(filename, name)


def print_result(filename, name, distance, show_distance=False):
    print(format_result(filename, name, distance, show_distance))


def check_image(image_to_check, known_names, known_face_encodings, tolerance=0.6, show_distance=False):
    """The output lines for one image."""
    unknown_image = face_recognition.load_image_file(image_to_check)

    # Scale down image if it's giant so things run a little faster
    if max(unknown_image.shape) > 1600:
        pil_img = PIL.Image.fromarray(unknown_image)
        pil_img.thumbnail((1600, 1600), PIL.Image.LANCZOS)
        unknown_image = np.array(pil_img)

    unknown_encodings = face_recognition.face_encodings(unknown_image)
    lines = []

    for unknown_encoding in unknown_encodings:
        distances = face_recognition.face_distance(known_face_encodings, unknown_encoding)
        result = list(distances <= tolerance)

        if True in result:
            lines.extend(format_result(image_to_check, name, distance, show_distance)
                         for is_match, name, distance in zip(result, known_names, distances) if is_match)
        else:
            lines.append(format_result(image_to_check, "unknown_person", None, show_distance))

    if not unknown_encodings:
        # print out fact that no faces were found in image
        lines.append(format_result(image_to_check, "no_persons_found", None, show_distance))
    return lines


def test_image(image_to_check, known_names, known_face_encodings, tolerance=0.6, show_distance=False):
    for line in check_image(image_to_check, known_names, known_face_encodings, tolerance, show_distance):
        print(line)


def image_files_in_folder(folder):
    return [os.path.join(folder, f) for f in os.listdir(folder) if re.match(r'.*\.(jpg|jpeg|png)', f, flags=re.I)]


def process_images_in_process_pool(images_to_check, known_names, known_face_encodings, number_of_cpus, tolerance, show_distance):
    _commands.print_in_pool(
        lambda image: check_image(image, known_names, known_face_encodings, tolerance, show_distance),
        images_to_check, number_of_cpus)


@click.command()
@click.argument('known_people_folder')
@click.argument('image_to_check')
@click.option('--cpus', default=1, help='number of CPU cores to use in parallel (can speed up processing lots of images). -1 means "use all in system"')
@click.option('--tolerance', default=0.6, help='Tolerance for face comparisons. Default is 0.6. Lower this if you get multiple matches for the same person.')
@click.option('--show-distance', default=False, type=bool, help='Output face distance. Useful for tweaking tolerance setting.')
def main(known_people_folder, image_to_check, cpus, tolerance, show_distance):
    with _commands.cpus(cpus):
        known_names, known_face_encodings = scan_known_people(known_people_folder)

        if os.path.isdir(image_to_check):
            if cpus == 1:
                [test_image(image_file, known_names, known_face_encodings, tolerance, show_distance) for image_file in image_files_in_folder(image_to_check)]
            else:
                process_images_in_process_pool(image_files_in_folder(image_to_check), known_names, known_face_encodings, cpus, tolerance, show_distance)
        else:
            test_image(image_to_check, known_names, known_face_encodings, tolerance, show_distance)


if __name__ == "__main__":
    main()
