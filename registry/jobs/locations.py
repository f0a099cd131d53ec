"""Where a job reads and writes: ``s3://BUCKET/PREFIX`` locations on the object store, and
the deterministic keys of its outputs (the same key for every attempt)."""

from __future__ import annotations

from dataclasses import dataclass

from queues.errors import InvalidRequest
from registry.store.keys import check_bucket_name, check_prefix


@dataclass(frozen=True, slots=True)
class Location:
    """A folder of objects: a bucket of the object store and a key prefix (no trailing
    '/'). ``bucket`` empty means the system's own store (uploaded inputs)."""

    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        if not self.bucket:
            return f"upload:{self.prefix}"
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def folder(self) -> str:
        """The prefix to list the folder's objects with."""
        return f"{self.prefix}/" if self.prefix else ""

    def contains(self, other: Location) -> bool:
        """Whether ``other`` lies inside this folder (or is it)."""
        if self.bucket != other.bucket:
            return False
        return (
            not self.prefix
            or other.prefix == self.prefix
            or other.folder().startswith(self.folder())
        )


def parse_location(text: str, what: str) -> Location:
    """``s3://BUCKET[/PREFIX]`` on the configured object store, checked like every key."""
    value = text.strip()
    if not value.startswith("s3://"):
        raise InvalidRequest(
            f"{what} {text!r} is not an s3://BUCKET/PREFIX location; give one on this "
            "system's object store (a local store keeps each bucket as a folder)"
        )
    bucket, _, prefix = value[len("s3://") :].partition("/")
    prefix = prefix.rstrip("/")
    try:
        check_bucket_name(bucket)
        check_prefix(f"{prefix}/" if prefix else "")
    except InvalidRequest as exc:
        raise InvalidRequest(f"{what} {text!r}: {exc.message}") from exc
    return Location(bucket, prefix)


def output_key(output: Location, job_id: str, index: int) -> str:
    """Where chunk ``index`` of a job writes: the same key for every attempt."""
    return output.key(job_id, f"chunk-{index:05d}.npz")


def manifest_key(output: Location, job_id: str) -> str:
    return output.key(job_id, "manifest.json")
