# -*- coding: utf-8 -*-
"""face_recognition 1.3.0's ``face_detection`` command: where the faces in images are.

The same arguments, options and output lines (``file,top,right,bottom,left``) as the original,
with face_recognition's later ``--upsample`` option (default 0, as 1.3.0 runs it). ``--cpus N``
uses N threads instead of a pool of N processes (see ``_commands``); a folder's lines are printed
in the order of the images, every good image's whatever fails, then the first error.
"""
from __future__ import print_function
import click
import os
import re
from . import _commands
from . import api as face_recognition


def format_result(filename, location):
    top, right, bottom, left = location
    return "{},{},{},{},{}".format(filename, top, right, bottom, left)


def print_result(filename, location):
    print(format_result(filename, location))


def check_image(image_to_check, model, upsample=0):
    """The output lines for one image."""
    unknown_image = face_recognition.load_image_file(image_to_check)
    face_locations = face_recognition.face_locations(unknown_image, number_of_times_to_upsample=upsample, model=model)
    return [format_result(image_to_check, face_location) for face_location in face_locations]


def test_image(image_to_check, model, upsample=0):
    for line in check_image(image_to_check, model, upsample):
        print(line)


def image_files_in_folder(folder):
    return [os.path.join(folder, f) for f in os.listdir(folder) if re.match(r'.*\.(jpg|jpeg|png)', f, flags=re.I)]


def process_images_in_process_pool(images_to_check, number_of_cpus, model, upsample=0):
    _commands.print_in_pool(lambda image: check_image(image, model, upsample), images_to_check, number_of_cpus)


@click.command()
@click.argument('image_to_check')
@click.option('--cpus', default=1, help='number of CPU cores to use in parallel. -1 means "use all in system"')
@click.option('--model', default="hog", help='Which face detection model to use. Options are "hog" or "cnn".')
@click.option('--upsample', default=0, help='How many times to upsample the image looking for faces. Higher numbers find smaller faces.')
def main(image_to_check, cpus, model, upsample):
    with _commands.cpus(cpus):
        if os.path.isdir(image_to_check):
            if cpus == 1:
                [test_image(image_file, model, upsample) for image_file in image_files_in_folder(image_to_check)]
            else:
                process_images_in_process_pool(image_files_in_folder(image_to_check), cpus, model, upsample)
        else:
            test_image(image_to_check, model, upsample)


if __name__ == "__main__":
    main()
