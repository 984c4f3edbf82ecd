"""The facedetect package against dlib's own outputs (tests/fixtures/pkg, made by
face_recognition 1.3.0 on dlib 20.0.1) and face_recognition's behaviour at the edges: no face,
several faces, grey and RGBA images, empty lists, given locations, bad input, the two commands.

Run against an installed wheel: ``pytest python/tests``.
"""

import json
import os
import threading
import time

import numpy as np
import PIL.Image
import pytest
from click.testing import CliRunner

import facedetect
import facedetect as face_recognition
from facedetect import api, face_detection_cli, face_recognition_cli

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "pkg")
IMAGES = os.path.join(FIXTURES, "images", "orig")
NAMES = ["32bit", "Tom_Hanks_54745", "astronaut", "biden", "obama", "obama2", "obama3",
         "obama_partial_face", "obama_partial_face2", "t1"]
FILES = {os.path.splitext(f)[0]: os.path.join(IMAGES, f) for f in os.listdir(IMAGES)}


def _fixture(name, kind):
    """dlib's outputs for a photo: the repository's fixture, else this suite's own (made the same
    way by shared/reference/make_reference.py and tests/fixtures/pkg/make_landmarks68.py)."""
    for path in [os.path.join(FIXTURES, "orig", name, kind + ".json"),
                 os.path.join(os.path.dirname(__file__), "fixtures", "%s.%s.json" % (name, kind))]:
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
    raise FileNotFoundError("no %s fixture for %s" % (kind, name))


def reference(name):
    return _fixture(name, "reference")


def reference_68(name):
    return _fixture(name, "landmarks68")


def css(rect, shape):
    left, top, right, bottom = rect
    return api._trim_css_to_bounds((top, right, bottom, left), shape)


_images = {}


def image(name, mode="RGB"):
    if (name, mode) not in _images:
        _images[name, mode] = face_recognition.load_image_file(FILES[name], mode)
    return _images[name, mode]


# The package


def test_top_level_mirrors_face_recognition():
    for name in ["load_image_file", "face_locations", "batch_face_locations", "face_landmarks",
                 "face_encodings", "compare_faces", "face_distance"]:
        assert getattr(facedetect, name) is getattr(api, name)
    assert facedetect.__version__
    star = {}
    exec("from facedetect import *", star)
    assert star["api"] is api and star["face_encodings"] is api.face_encodings


def test_the_model_paths_face_recognition_names():
    for name, file in [("predictor_68_point_model", "shape_predictor_68_face_landmarks.dat"),
                       ("predictor_5_point_model", "shape_predictor_5_face_landmarks.dat"),
                       ("cnn_face_detection_model", "mmod_human_face_detector.dat"),
                       ("face_recognition_model", "dlib_face_recognition_resnet_model_v1.dat")]:
        path = getattr(api, name)
        if path is None:
            pytest.skip("face_recognition_models is not installed")
        assert os.path.basename(path) == file and os.path.isfile(path)
    assert callable(face_recognition_cli.process_images_in_process_pool)
    assert callable(face_detection_cli.process_images_in_process_pool)


def test_load_image_file_modes():
    assert image("obama").shape == (1137, 910, 3) and image("obama").dtype == np.uint8
    assert image("32bit").shape == (1200, 626, 3)
    assert image("obama", "L").shape == (1137, 910)
    assert face_recognition.load_image_file(FILES["32bit"], mode="RGBA").shape == (1200, 626, 4)
    with open(FILES["obama"], "rb") as f:
        assert np.array_equal(face_recognition.load_image_file(f), image("obama"))


# dlib's numbers


@pytest.mark.parametrize("name", NAMES)
def test_hog_locations_are_dlibs(name):
    ref = reference(name)
    img = image(name)
    assert api.face_locations(img) == [css(face["rect"], img.shape) for face in ref["hog"]["faces"]]
    assert api.face_locations(img, 0) == [css(face["rect"], img.shape) for face in ref["hog_upsample0"]]


@pytest.mark.parametrize("name,upsample", [("Tom_Hanks_54745", 0), ("Tom_Hanks_54745", 1), ("astronaut", 0),
                                           ("t1", 0)])
def test_cnn_locations_are_dlibs(name, upsample):
    ref = reference(name)
    img = image(name)
    found = api._raw_face_locations(img, upsample, model="cnn")
    expected = ref["cnn"]["faces"] if upsample else ref["cnn_upsample0"]
    assert [[f.rect.left(), f.rect.top(), f.rect.right(), f.rect.bottom()] for f in found] == \
        [face["rect"] for face in expected]
    for f, face in zip(found, expected):
        assert f.confidence == pytest.approx(face["score"], abs=1e-4)
    assert api.face_locations(img, upsample, "cnn") == [css(face["rect"], img.shape) for face in expected]


@pytest.mark.parametrize("name", NAMES)
def test_landmarks_and_encodings_are_dlibs(name):
    ref = reference(name)
    img = image(name)
    faces = ref["hog"]["faces"]
    small = api.face_landmarks(img, model="small")
    assert [lm["right_eye"] + lm["left_eye"] + lm["nose_tip"] for lm in small] == \
        [[tuple(p) for p in face["landmarks5"]] for face in faces]
    encodings = api.face_encodings(img)
    assert len(encodings) == len(faces)
    for encoding, face in zip(encodings, faces):
        assert encoding.dtype == np.float64 and encoding.shape == (128,)
        assert np.abs(encoding - np.array(face["descriptor"])).max() < 1e-5
    ref68 = reference_68(name)
    raw = api._raw_face_landmarks(img)
    assert [[(p.x, p.y) for p in shape.parts()] for shape in raw] == \
        [[tuple(p) for p in face["landmarks68"]] for face in ref68["faces"]]
    large = api.face_encodings(img, model="large")
    assert len(large) == len(ref68["encodings"])
    for encoding, expected in zip(large, ref68["encodings"]):
        assert np.abs(encoding - np.array(expected)).max() < 1e-5


def test_dlib_objects():
    img = image("obama")
    rect = api._raw_face_locations(img)[0]
    assert (rect.left(), rect.top(), rect.right(), rect.bottom()) == (349, 142, 617, 409)
    assert (rect.width(), rect.height()) == (269, 268)
    assert repr(rect) == "rectangle(349,142,617,409)" and str(rect) == "[(349, 142) (617, 409)]"
    assert api._css_to_rect(api._rect_to_css(rect)) == rect
    shape = api._raw_face_landmarks(img)[0]
    assert shape.num_parts == 68 and shape.rect == rect
    assert shape.part(10) == shape.parts()[10] and (shape.part(10).x, shape.part(10).y) == (552, 399)
    with pytest.raises(IndexError):
        shape.part(68)
    detection = api._raw_face_locations(img, model="cnn")[0]
    assert isinstance(detection.rect, facedetect._dlib.rectangle) and detection.confidence > 0


# Edge cases


def test_no_face():
    blank = np.full((300, 400, 3), 128, dtype=np.uint8)
    assert api.face_locations(blank) == []
    assert api.face_locations(blank, model="cnn") == []
    assert api.face_landmarks(blank) == []
    assert api.face_encodings(blank) == []
    assert api.face_locations(np.zeros((5, 5, 3), dtype=np.uint8)) == []
    assert api.face_locations(np.zeros((0, 0, 3), dtype=np.uint8)) == []


def test_several_faces():
    img = image("t1")
    locations = api.face_locations(img)
    assert len(locations) == 6
    encodings = api.face_encodings(img, locations)
    assert len(encodings) == 6
    distances = api.face_distance(encodings, encodings[0])
    assert distances[0] == 0 and (distances[1:] > 0.6).all()
    assert api.compare_faces(encodings, encodings[2]) == [i == 2 for i in range(6)]


def test_known_face_locations():
    img = image("obama")
    locations = api.face_locations(img)
    detected = api.face_encodings(img)
    given = api.face_encodings(img, known_face_locations=locations)
    assert np.array_equal(detected[0], given[0])
    assert api.face_landmarks(img, locations) == api.face_landmarks(img)
    # A location that reaches past the image, as detections at its edge do.
    assert len(api.face_encodings(img, [(-20, 700, 300, 300)])) == 1
    assert api.face_encodings(img, []) == []


def test_jitters_are_face_recognitions():
    # Each dlib face encoder keeps its random generator between calls, so a fresh encoder's
    # first calls are fixed: tests/fixtures/pkg/make_jitters.py recorded face_recognition's.
    with open(os.path.join(FIXTURES, "orig", "obama", "jitters.json")) as f:
        expected = json.load(f)["calls"]
    img = image("obama")
    encoder = facedetect._dlib.face_recognition_model_v1()
    faces = [api.pose_predictor_5_point(img, box) for box in api._raw_face_locations(img)]
    for call in expected:
        ours = encoder.compute_face_descriptors(img, faces, call["num_jitters"])
        assert len(ours) == len(call["encodings"])
        for a, b in zip(ours, call["encodings"]):
            assert np.abs(a - np.array(b)).max() < 1e-5, call["num_jitters"]
    plain = api.face_encodings(img)[0]
    assert 0 < np.linalg.norm(plain - np.array(expected[0]["encodings"][0])) < 0.2


def test_grey_images():
    grey = image("obama", "L")
    assert api.face_locations(grey) == [(142, 617, 409, 349)]
    rgb_of_grey = np.stack([grey] * 3, axis=-1)
    # dlib's CNN detector and shape predictors read a grey image as the RGB image of equal
    # channels.
    assert api.face_locations(grey, 0, "cnn") == api.face_locations(rgb_of_grey, 0, "cnn")
    locations = api.face_locations(rgb_of_grey)
    assert api.face_landmarks(grey, locations) == api.face_landmarks(rgb_of_grey, locations)
    # dlib's face encoder takes RGB images only.
    with pytest.raises(TypeError):
        api.face_encodings(grey)
    assert api.face_encodings(np.zeros((100, 100), dtype=np.uint8)) == []


@pytest.mark.parametrize("name", ["Tom_Hanks_54745", "astronaut", "obama", "obama_partial_face", "t1"])
def test_grey_images_are_scanned_as_dlib_scans_them(name):
    # dlib resizes a grey image's pyramid with its own rounding; on these photos the RGB image
    # of the same samples gives other rectangles at some upsampling.
    with open(os.path.join(FIXTURES, "orig", name, "grey.json")) as f:
        expected = json.load(f)
    grey = api.load_image_file(FILES[name], mode="L")
    assert grey.shape == (expected["height"], expected["width"])
    for run in expected["hog"]:
        found = api._raw_face_locations(grey, run["upsample"])
        assert [[r.left(), r.top(), r.right(), r.bottom()] for r in found] == run["rects"], run["upsample"]


def test_unsupported_images_raise_what_dlib_raises():
    rgba = face_recognition.load_image_file(FILES["32bit"], mode="RGBA")
    for call in [lambda: api.face_locations(rgba), lambda: api.face_locations(rgba, model="cnn"),
                 lambda: api.face_landmarks(rgba, [(10, 100, 100, 10)]),
                 lambda: api.face_encodings(rgba, [(10, 100, 100, 10)]),
                 lambda: api.face_locations(image("obama").astype(np.float32)),
                 lambda: api.face_locations(np.zeros(10, dtype=np.uint8))]:
        with pytest.raises(RuntimeError, match="Unsupported image type"):
            call()
    for call in [lambda: api.face_locations([[1, 2], [3, 4]]), lambda: api.face_encodings("obama.jpg"),
                 lambda: api.face_locations(image("obama"), -1), lambda: api.face_locations(image("obama"), 1.5)]:
        with pytest.raises(TypeError):
            call()
    # As in face_recognition, nothing is checked when there is no face to look at.
    assert api.face_landmarks(rgba, []) == [] and api.face_encodings(rgba, []) == []
    with pytest.raises(ValueError):
        api.face_landmarks(image("obama"), model="medium")
    with pytest.raises(IndexError):
        api.face_landmarks(image("obama"), [(1, 2, 3)])


def test_compute_face_descriptor_as_dlib_takes_it():
    # dlib's outputs for the calls scripts make directly (tests/fixtures/pkg/make_descriptors.py).
    with open(os.path.join(FIXTURES, "orig", "obama", "descriptors.json")) as f:
        expected = json.load(f)
    img = image("obama")
    rect = facedetect._dlib.rectangle(*expected["rect"])
    shape5 = api.pose_predictor_5_point(img, rect)
    shape68 = api.pose_predictor_68_point(img, rect)
    assert [[p.x, p.y] for p in shape5.parts()] == expected["shape5"]
    assert [[p.x, p.y] for p in shape68.parts()] == expected["shape68"]
    encoder = facedetect._dlib.face_recognition_model_v1()
    chip = face_recognition.load_image_file(os.path.join(FIXTURES, "orig", "obama", "chip_hog_0.png"))
    calls = {
        "shape5": [encoder.compute_face_descriptor(img, shape5),
                   encoder.compute_face_descriptor(img, shape5, 1),
                   encoder.compute_face_descriptor(img, shape5, True),
                   encoder.compute_face_descriptor(img=img, face=shape5, num_jitters=0, padding=0.25),
                   encoder.compute_face_descriptor(img, shape5, -3),
                   encoder.compute_face_descriptor(img, [shape5, shape5])[1],
                   encoder.compute_face_descriptor([img], [[shape5]])[0][0]],
        "shape5_padding": [encoder.compute_face_descriptor(img, shape5, 0, expected["padding"])],
        "shape68": [encoder.compute_face_descriptor(img, shape68)],
        "chip": [encoder.compute_face_descriptor(chip), encoder.compute_face_descriptor([chip, chip])[1]],
    }
    for name, ours in calls.items():
        for i, encoding in enumerate(ours):
            assert np.array(encoding).shape == (128,), (name, i)
            assert np.abs(np.array(encoding) - np.array(expected["calls"][name])).max() < 1e-5, (name, i)
    with pytest.raises(TypeError):
        encoder.compute_face_descriptor(img, shape5, 1.5)
    with pytest.raises(TypeError):
        encoder.compute_face_descriptor(image("obama", "L"), shape5)
    with pytest.raises(RuntimeError, match="150x150"):
        encoder.compute_face_descriptor(img)


def test_dlibs_input_rules():
    img = image("obama")
    grey = image("obama", "L")
    # H x W x 1 arrays are grey images.
    column = grey.reshape(grey.shape + (1,))
    assert api.face_locations(column) == api.face_locations(grey) == [(142, 617, 409, 349)]
    assert api.face_locations(column, 0, "cnn") == api.face_locations(grey, 0, "cnn") == [(154, 611, 390, 375)]
    assert api.face_landmarks(column, model="small") == api.face_landmarks(grey, model="small")
    with pytest.raises(TypeError):
        api.face_encodings(column)
    # bool where dlib takes an int: True is 1.
    assert api.face_locations(img, True) == api.face_locations(img, 1)
    assert api.face_locations(img, np.bool_(False)) == api.face_locations(img, 0)
    assert api.face_locations(img, np.int64(1)) == api.face_locations(img, 1)
    # (The CNN's checks on a smaller copy, for time.)
    small = np.array(PIL.Image.fromarray(img).resize((364, 455)))
    small_grey = np.array(PIL.Image.fromarray(small).convert("L"))
    assert api.batch_face_locations([small], True, batch_size=True) == [api.face_locations(small, 1, "cnn")]
    # Float locations are refused, numpy integers taken.
    for location in [(142.0, 617.0, 409.0, 349.0), tuple(np.array([142., 617, 409, 349]))]:
        with pytest.raises(TypeError):
            api.face_landmarks(img, [location])
        with pytest.raises(TypeError):
            api.face_encodings(img, [location])
    assert api.face_landmarks(img, [tuple(np.array([142, 617, 409, 349]))]) == api.face_landmarks(img)
    # batch_face_locations: batch_size 0 refused (but for no images), a negative one is one batch.
    with pytest.raises(RuntimeError):
        api.batch_face_locations([img, img], 0, batch_size=0)
    assert api.batch_face_locations([], 0, batch_size=0) == []
    with pytest.raises(TypeError):
        api.batch_face_locations([img], 0, batch_size=1.5)
    alone = [api.face_locations(small, 0, "cnn"), api.face_locations(small_grey, 0, "cnn")]
    assert alone[0] and api.batch_face_locations([small, small], 0, batch_size=-1) == [alone[0]] * 2
    # Grey and RGB images of one size in one batch, as face_recognition takes them.
    assert api.batch_face_locations([small, small_grey, small_grey[:, :, None]], 0) == alone + alone[1:]


def test_the_examples_calls():
    # The calls of face_recognition's examples (examples/ in its repository), on the fixtures.
    biden, obama, unknown = (image(name) for name in ["biden", "obama", "obama2"])
    # recognize_faces_in_pictures.py, face_distance.py
    known = [face_recognition.face_encodings(biden)[0], face_recognition.face_encodings(obama)[0]]
    unknown_encoding = face_recognition.face_encodings(unknown)[0]
    assert face_recognition.compare_faces(known, unknown_encoding) == [False, True]
    distances = face_recognition.face_distance(known, unknown_encoding)
    assert distances[0] > 0.6 > distances[1]
    assert face_recognition.compare_faces(known, unknown_encoding, tolerance=0.50) == [False, True]
    # find_faces_in_picture.py, find_faces_in_picture_cnn.py: crop each face with PIL.
    for face_location in face_recognition.face_locations(biden) + \
            face_recognition.face_locations(biden, number_of_times_to_upsample=0, model="cnn"):
        top, right, bottom, left = face_location
        assert PIL.Image.fromarray(biden[top:bottom, left:right]).size == (right - left, bottom - top)
    # find_facial_features_in_picture.py, digital_makeup.py: draw on every feature.
    landmarks = face_recognition.face_landmarks(image("t1"))
    assert len(landmarks) == 6
    canvas = PIL.Image.fromarray(image("t1"))
    from PIL import ImageDraw
    draw = ImageDraw.Draw(canvas, "RGBA")
    for face_landmarks in landmarks:
        draw.polygon(face_landmarks["left_eyebrow"], fill=(68, 54, 39, 128))
        draw.line(face_landmarks["top_lip"], fill=(150, 0, 0, 64), width=8)
        draw.line(face_landmarks["left_eye"] + [face_landmarks["left_eye"][0]], fill=(0, 0, 0, 110), width=6)
    # face_recognition_knn.py: one face per training image, encoded at its known location.
    from facedetect.face_recognition_cli import image_files_in_folder
    assert sorted(os.path.basename(f) for f in image_files_in_folder(IMAGES)) == sorted(os.listdir(IMAGES))
    boxes = face_recognition.face_locations(obama)
    assert len(face_recognition.face_encodings(obama, known_face_locations=boxes)) == 1
    # facerec_from_webcam_faster.py: a quarter-size BGR frame turned RGB with [:, :, ::-1].
    small_bgr = np.ascontiguousarray(np.array(PIL.Image.fromarray(image("t1")).resize((480, 270)))[:, :, ::-1])
    rgb_small = small_bgr[:, :, ::-1]
    locations = face_recognition.face_locations(rgb_small)
    assert face_recognition.face_encodings(rgb_small, locations) and len(locations) == len(
        face_recognition.face_encodings(np.ascontiguousarray(rgb_small), locations))
    # find_faces_in_batches.py: frames of one size in batches.
    frames = [obama, obama[:, ::-1]]
    assert face_recognition.batch_face_locations(frames, number_of_times_to_upsample=0) == \
        [face_recognition.face_locations(frame, 0, "cnn") for frame in frames]
    # web_service_example.py: an uploaded file object.
    with open(FILES["obama2"], "rb") as stream:
        assert face_recognition.compare_faces([known[1]], face_recognition.face_encodings(
            face_recognition.load_image_file(stream))[0]) == [True]


def test_non_contiguous_arrays():
    img = image("obama")
    flipped = img[:, ::-1]
    assert api.face_locations(flipped) == api.face_locations(np.ascontiguousarray(flipped))


def test_empty_lists():
    encoding = api.face_encodings(image("biden"))[0]
    for empty in ([], np.array([])):
        distances = api.face_distance(empty, encoding)
        assert type(distances) is np.ndarray and len(distances) == 0
        assert api.compare_faces(empty, encoding) == []


def test_batch_face_locations():
    img = image("obama")
    assert api.batch_face_locations([img, img], number_of_times_to_upsample=0, batch_size=1) == \
        [[(154, 611, 390, 375)]] * 2
    assert api.batch_face_locations([], 0) == []
    with pytest.raises(RuntimeError, match="same dimensions"):
        api.batch_face_locations([img, img[:500]], 0)


def test_threads_run_in_parallel_without_the_gil():
    img = image("t1")
    expected = api.face_locations(img)
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(None)
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    results = []
    workers = [threading.Thread(target=lambda: results.append(api.face_locations(img))) for _ in range(2)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    stop.set()
    counter.join()
    assert results == [expected, expected]
    # The counter ran while Rust worked (at a twentieth of its rate at least, where a held GIL
    # would let it tick only between the two calls): the GIL was released.
    assert len(ticks) > elapsed * 1000 / 20


# The commands


def test_face_detection_cli(tmp_path):
    runner = CliRunner()
    result = runner.invoke(face_detection_cli.main, [FILES["obama"]])
    assert result.exit_code == 0, result.output
    # Upsampled 0 times, as face_recognition's command detects.
    assert result.output == "{},136,624,394,366\n".format(FILES["obama"])
    result = runner.invoke(face_detection_cli.main, [FILES["obama"], "--upsample", "0", "--model", "cnn"])
    assert result.output == "{},154,611,390,375\n".format(FILES["obama"])
    result = runner.invoke(face_detection_cli.main, [IMAGES, "--cpus", "2"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    single = runner.invoke(face_detection_cli.main, [IMAGES]).output.splitlines()
    assert lines == single and len([l for l in lines if "t1.jpg" in l]) == 6
    assert "--upsample" in runner.invoke(face_detection_cli.main, ["--help"]).output


def test_face_recognition_cli(tmp_path):
    known = tmp_path / "known"
    known.mkdir()
    for name in ["obama", "biden"]:
        (known / (name + ".jpg")).write_bytes(open(FILES[name], "rb").read())
    blank = tmp_path / "blank.png"
    PIL.Image.fromarray(np.full((200, 200, 3), 255, dtype=np.uint8)).save(str(blank))
    runner = CliRunner()
    result = runner.invoke(face_recognition_cli.main, [str(known), FILES["obama2"], "--show-distance", "1"])
    assert result.exit_code == 0, result.output
    name, person, distance = result.output.strip().split(",")
    assert (name, person) == (FILES["obama2"], "obama") and 0 < float(distance) < 0.6
    result = runner.invoke(face_recognition_cli.main, [str(known), str(blank)])
    assert result.output == "{},no_persons_found\n".format(blank)
    result = runner.invoke(face_recognition_cli.main, [str(known), FILES["Tom_Hanks_54745"], "--tolerance", "0.4"])
    assert result.output == "{},unknown_person\n".format(FILES["Tom_Hanks_54745"])
    threaded = runner.invoke(face_recognition_cli.main, [str(known), IMAGES, "--cpus", "2"])
    single = runner.invoke(face_recognition_cli.main, [str(known), IMAGES])
    assert threaded.exit_code == 0 and threaded.output == single.output
    assert "{},biden".format(FILES["biden"]) in single.output.splitlines()


def _folder_with_a_bad_file(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ["biden", "obama", "obama2"]:
        (folder / (name + ".jpg")).write_bytes(open(FILES[name], "rb").read())
    (folder / "bad.jpg").write_bytes(b"not an image")
    return folder


@pytest.mark.parametrize("command", ["detection", "recognition"])
def test_the_commands_with_a_bad_file(tmp_path, command):
    folder = _folder_with_a_bad_file(tmp_path)
    files = face_detection_cli.image_files_in_folder(str(folder))
    good = [f for f in files if not f.endswith("bad.jpg")]
    runner = CliRunner()
    if command == "detection":
        main, args = face_detection_cli.main, [str(folder)]
        expected = [face_detection_cli.check_image(f, "hog") for f in good]
    else:
        known = tmp_path / "known"
        known.mkdir()
        (known / "obama.jpg").write_bytes(open(FILES["obama"], "rb").read())
        names, encodings = face_recognition_cli.scan_known_people(str(known))
        main, args = face_recognition_cli.main, [str(known), str(folder)]
        expected = [face_recognition_cli.check_image(f, names, encodings) for f in good]
    # As face_recognition's process pool: every good image's lines, then the error (exit 1).
    result = runner.invoke(main, args + ["--cpus", "2"])
    assert result.exit_code == 1 and isinstance(result.exception, PIL.UnidentifiedImageError)
    assert result.output.splitlines() == [line for lines in expected for line in lines]
    # With --cpus 1, as face_recognition's loop: the lines up to the bad file, then the error.
    result = runner.invoke(main, args)
    assert result.exit_code == 1 and isinstance(result.exception, PIL.UnidentifiedImageError)
    before = files[:files.index(str(folder / "bad.jpg"))]
    assert result.output.splitlines() == [line for f, lines in zip(good, expected) if f in before for line in lines]
    # --cpus 0 and below -1 fail as multiprocessing.Pool does, before any image.
    for cpus in ["0", "-2"]:
        result = runner.invoke(main, args + ["--cpus", cpus])
        assert result.exit_code == 1 and isinstance(result.exception, ValueError), result.output
        assert "at least 1" in str(result.exception)


def test_cpus_bounds_the_threads():
    previous = facedetect.get_num_threads()
    with face_detection_cli._commands.cpus(2):
        assert facedetect.get_num_threads() == 2
    with face_detection_cli._commands.cpus(0):
        assert facedetect.get_num_threads() == 1
    with face_detection_cli._commands.cpus(-1):
        assert facedetect.get_num_threads() == previous
    assert facedetect.get_num_threads() == previous
