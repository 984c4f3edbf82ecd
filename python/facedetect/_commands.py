"""What the two commands share: ``--cpus`` as threads, and face_recognition's process pool's
handling of images that fail.

face_recognition runs ``--cpus N`` (other than 1) as a pool of N processes over the images of a
folder; here N threads share one copy of the models and the package's thread pool has N threads,
so that the command uses N cores in all. As with face_recognition's pool, every image is
checked whatever fails, and the first error (in the images' order) is raised at the end; the
lines are printed in the images' order.
"""
import contextlib
from concurrent.futures import ThreadPoolExecutor

from . import _native


def pool_size(number_of_cpus):
    """The workers of face_recognition's pool for ``--cpus``: every core for -1, else the number,
    which must be at least 1 (``multiprocessing.Pool``'s ValueError otherwise)."""
    if number_of_cpus == -1:
        return _native.get_num_threads()
    if number_of_cpus < 1:
        raise ValueError("Number of processes must be at least 1")
    return number_of_cpus


@contextlib.contextmanager
def cpus(number_of_cpus):
    """The package's threads bounded to ``--cpus`` (all the process may use for -1; one for the
    values face_recognition runs in one process) while a command runs."""
    previous = _native.get_num_threads()
    if number_of_cpus != -1:
        _native.set_num_threads(max(number_of_cpus, 1))
    try:
        yield
    finally:
        _native.set_num_threads(previous)


def print_in_pool(check, images, number_of_cpus):
    """Prints ``check(image)``'s lines for every image, ``number_of_cpus`` at a time, then raises
    the first image's error, if any."""
    first_error = None
    with ThreadPoolExecutor(max_workers=pool_size(number_of_cpus)) as pool:
        for future in [pool.submit(check, image) for image in images]:
            try:
                lines = future.result()
            except Exception as error:
                first_error = first_error or error
                continue
            for line in lines:
                print(line)
    if first_error is not None:
        raise first_error
