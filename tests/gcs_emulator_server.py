"""gcp-storage-emulator with the two parts of the GCS JSON API that TensorStore relies on and
the emulator lacks: object generations in download headers, and request preconditions.

    python tests/gcs_emulator_server.py --port=PORT --bucket=NAME

TensorStore (Orbax's array writer) commits its OCDBT manifests with conditional writes: it
reads an object's generation from the `x-goog-generation` header of a download, then writes
with `ifGenerationMatch=<generation>` (0: only if absent), and retries when GCS answers 412.
The emulator sends no such header and ignores preconditions, so every conditional write would
either fail ("Malformed StorageGeneration") or silently win a race it should lose. This adds
both, as GCS documents them (cloud.google.com/storage/docs/request-preconditions):
- a failed ifGenerationMatch is 412 Precondition Failed;
- a failed ifGenerationNotMatch is 304 Not Modified on a read, 412 on a write;
- the check and the write happen under one lock, so concurrent writers see GCS's semantics.
Everything else is the emulator's own code.
"""

from __future__ import annotations

import argparse
import threading
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

LOCK = threading.RLock()


def _generation(storage, bucket: str, name: str) -> int:
    """The object's current generation; 0 when it does not exist (GCS's convention)."""
    try:
        return int(storage.get_file_obj(bucket, name)["generation"])
    except NotFound:
        return 0


def _failed_precondition(request, storage, name: str | None, *, read: bool):
    """The status to answer instead of running the request, or None when it may run."""
    query = request.query
    if "ifGenerationMatch" not in query and "ifGenerationNotMatch" not in query:
        return None
    if name is None:  # a multipart upload names its object in the body: not supported here
        return HTTPStatus.NOT_IMPLEMENTED
    current = _generation(storage, request.params["bucket_name"], name)
    if "ifGenerationMatch" in query and int(query["ifGenerationMatch"][0]) != current:
        return HTTPStatus.PRECONDITION_FAILED
    if "ifGenerationNotMatch" in query and int(query["ifGenerationNotMatch"][0]) == current:
        return HTTPStatus.NOT_MODIFIED if read else HTTPStatus.PRECONDITION_FAILED
    return None


def _guarded(handler, *, read: bool, name_of):
    def wrapped(request, response, storage, *args, **kwargs):
        with LOCK:
            status = _failed_precondition(request, storage, name_of(request), read=read)
            if status is not None:
                response.status = status
                return None
            result = handler(request, response, storage, *args, **kwargs)
            if read and response.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
                try:
                    obj = storage.get_file_obj(
                        request.params["bucket_name"], request.params["object_id"]
                    )
                    response["x-goog-generation"] = str(obj["generation"])
                    response["x-goog-metageneration"] = str(obj["metageneration"])
                except NotFound:
                    pass
            return result

    return wrapped


def _object_id(request):
    return request.params.get("object_id")


def _upload_name(request):
    names = request.query.get("name")
    return names[0] if names else None


def install() -> None:
    """Replaces the emulator's object handlers by the guarded ones, in its routing table."""
    replacements = {
        objects.get: _guarded(objects.get, read=True, name_of=_object_id),
        objects.download: _guarded(objects.download, read=True, name_of=_object_id),
        objects.delete: _guarded(objects.delete, read=False, name_of=_object_id),
        objects.insert: _guarded(objects.insert, read=False, name_of=_upload_name),
    }
    server.HANDLERS = tuple(
        (regex, {method: replacements.get(h, h) for method, h in handlers.items()})
        for regex, handlers in server.HANDLERS
    )
    objects.insert = replacements[objects.insert]  # the router's fallback for bare upload paths


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", required=True)
    args = parser.parse_args()
    install()
    server.create_server("localhost", args.port, in_memory=True, default_bucket=args.bucket).run()


if __name__ == "__main__":
    main()
