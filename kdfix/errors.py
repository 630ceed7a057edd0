"""The kdfix exception hierarchy: one root carrying field, file offset and path."""

from __future__ import annotations


class KdfixError(Exception):
    """An error about a dump; ``str()`` is one line naming the file, field and offset."""

    exit_code = 2  # the CLI's exit status for this error: unusable input, usage, failed write

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        offset: int | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.offset = offset
        self.path = path

    def with_context(
        self, *, field: str | None = None, offset: int | None = None, path: str | None = None
    ) -> KdfixError:
        """Fill in whatever context is still missing and return self (for ``raise e.with_context()``)."""
        if self.field is None and field is not None:
            self.field = field
        if self.offset is None and offset is not None:
            self.offset = offset
        if self.path is None and path is not None:
            self.path = path
        return self

    def __str__(self) -> str:
        where = []
        if self.field is not None:
            where.append(self.field)
        if self.offset is not None:
            where.append(f"at {self.offset:#x}")
        parts = []
        if self.path is not None:
            parts.append(str(self.path))
        if where:
            parts.append(" ".join(where))
        parts.append(self.message)
        return ": ".join(parts).replace("\n", " ")


class FormatError(KdfixError):
    """The bytes do not form a valid structure."""


class TruncatedError(FormatError):
    """The file ends before a structure or region it declares."""


class UnsupportedError(KdfixError):
    """A valid but unsupported feature (or a missing optional library)."""


class CodecError(FormatError):
    """A page failed to decompress, or decompressed to the wrong size."""

    def __init__(self, message: str, *, pfn: int | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.pfn = pfn


class AddressError(KdfixError):
    """A physical address is not present in the dump."""

    def __init__(self, message: str, *, paddr: int | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.paddr = paddr


class JournalError(KdfixError):
    """The undo journal is missing, corrupt, or does not match the file."""


class WriteError(KdfixError):
    """Writing an output failed (disk full, I/O error, permissions)."""


class VerificationError(KdfixError):
    """An output re-read after writing does not pass the checks it must (it was not published; exit 1)."""

    exit_code = 1
