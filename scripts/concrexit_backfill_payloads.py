"""Prints the payloads concrexit's own backfill would send, for `facedetect enqueue -`.

Run inside concrexit (its `website/` folder), with its settings:

    python manage.py shell < concrexit_backfill_payloads.py | facedetect enqueue - --queue-url URL

concrexit's backfill (`manage.py trigger_facedetection_lambda`, and the nightly Celery task of
the same name) invokes the function with three sets of sources, in this order: reference faces
still processing that were submitted over 7 hours ago or never, photos likewise, and photos that
have no FaceDetectionPhoto yet (created here, 400 at a time, as concrexit does). This prints
exactly those, one JSON payload per line, as concrexit serialises them: `api_url` is BASE_URL,
each source's `photo_url` a media URL signed for 7 hours, batches of
FACEDETECTION_LAMBDA_BATCH_SIZE sources; and it sets each source's `submitted_at` as concrexit
does when it submits, so that the nightly task leaves them alone for 7 hours instead of invoking
the function for the same sources.

The signed URLs expire after 7 hours: enqueue the output at once, and run this again for
whatever is still processing later rather than re-sending old output. Counts go to stderr, the
payloads alone to stdout.
"""

import json
import sys

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from facedetection.models import FaceDetectionPhoto, ReferenceFace
from photos.models import Photo
from utils.media.services import get_media_url

# As concrexit: long enough for the function's queue (6 h) and then some.
URL_VALID_SECONDS = 60 * 60 * 7
RESUBMIT_AFTER = timezone.timedelta(hours=7)
NEW_PHOTOS_PER_ROUND = 400


def source_payload(source):
    """One source as concrexit sends it to the function."""
    if isinstance(source, ReferenceFace):
        kind, thumbnail = "reference", source.file.thumbnails.large
    elif isinstance(source, FaceDetectionPhoto):
        kind, thumbnail = "photo", source.photo.file.thumbnails.photo_large
    else:
        raise TypeError(f"not a face detection source: {source!r}")
    return {
        "type": kind,
        "pk": source.pk,
        "token": source.token,
        "photo_url": get_media_url(
            thumbnail, absolute_url=True, expire_seconds=URL_VALID_SECONDS
        ),
    }


def emit(sources, out):
    """Prints `sources` as payloads of at most the batch size, marking them submitted."""
    if any(source.status != source.Status.PROCESSING for source in sources):
        raise ValueError("a source has already been processed")
    size = settings.FACEDETECTION_LAMBDA_BATCH_SIZE
    for start in range(0, len(sources), size):
        batch = sources[start : start + size]
        payload = {
            "api_url": settings.BASE_URL,
            "sources": [source_payload(source) for source in batch],
        }
        for source in batch:
            source.submitted_at = timezone.now()
            source.save()
        out.write(json.dumps(payload) + "\n")
    out.flush()


def stale(model):
    """Sources of `model` still processing, submitted over 7 hours ago or never."""
    submitted_before = timezone.now() - RESUBMIT_AFTER
    return model.objects.filter(status=model.Status.PROCESSING).filter(
        Q(submitted_at__lte=submitted_before) | Q(submitted_at__isnull=True)
    )


def main(out=sys.stdout, log=sys.stderr):
    references = list(stale(ReferenceFace))
    emit(references, out)
    print(f"{len(references)} reference faces", file=log)

    photos = list(stale(FaceDetectionPhoto).select_related("photo"))
    emit(photos, out)
    print(f"{len(photos)} photos resubmitted", file=log)

    new = 0
    while Photo.objects.filter(facedetectionphoto__isnull=True).exists():
        created = FaceDetectionPhoto.objects.bulk_create(
            [
                FaceDetectionPhoto(photo=photo)
                for photo in Photo.objects.filter(facedetectionphoto__isnull=True)[
                    :NEW_PHOTOS_PER_ROUND
                ]
            ]
        )
        emit(created, out)
        new += len(created)
    print(f"{new} new photos", file=log)


main()
