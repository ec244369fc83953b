from __future__ import annotations

from dataclasses import dataclass, field


class DomainError(Exception):
    """Base of every error a use case raises; the HTTP and CLI layers map them once."""


@dataclass(frozen=True)
class FieldProblem:
    """One thing wrong with one input: where (`loc`, e.g. ("events", 3, "time")) and why."""

    loc: tuple[str | int, ...]
    message: str

    def path(self) -> str:
        return ".".join(str(part) for part in self.loc)


@dataclass
class InvalidInput(DomainError):
    problems: list[FieldProblem] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(f"{p.path()}: {p.message}" for p in self.problems)


class NotFound(DomainError):
    """The thing does not exist, or the caller may not know that it does."""


@dataclass
class Conflict(DomainError):
    detail: str

    def __str__(self) -> str:
        return self.detail


@dataclass
class Locked(DomainError):
    retry_after_seconds: int

    def __str__(self) -> str:
        return f"locked for {self.retry_after_seconds} s"


class Forbidden(DomainError):
    """Authenticated, but the credential lacks the scope for this action."""


class Unauthenticated(DomainError):
    pass


@dataclass
class Gone(DomainError):
    """The thing existed but its personal part was erased."""

    detail: str

    def __str__(self) -> str:
        return self.detail
