"""Debian packages as the catalogue's lists give them, and the exact packages
a kernel row stands for (`ResolvedKernel`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Mapping, TypeVar

from ..table import KernelRow
from .mirrors import ARCH


class Role(Enum):
    IMAGE = "image"
    BINARY = "binary"  # sid/experimental: the kernel itself, split from the image
    MODULES = "modules"  # sid/experimental: the .ko.xz files, split from the image
    BASE = "base"  # sid/experimental: config, System.map, modules.order/builtin
    HEADERS = "headers"
    HEADERS_COMMON = "headers-common"
    KBUILD = "kbuild"
    SOURCE = "source"  # kernels built here: linux-source-X.Y


D = TypeVar("D", bound="Deb")


@dataclass(frozen=True)
class Deb:
    """One Debian package at one version, as the catalogue's lists give it:
    what `apt-get download` fetches and what the download is checked against."""

    name: str
    version: str
    arch: str
    size: int
    sha256: str

    @property
    def pin(self) -> str:
        return f"{self.name}={self.version}"

    @property
    def deb_name(self) -> str:
        """The file `apt-get download` writes."""
        return f"{self.name}_{self.version.replace(':', '%3a')}_{self.arch}.deb"

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "arch": self.arch, "size": self.size, "sha256": self.sha256}

    @classmethod
    def fields_of(cls, d: Mapping[str, object]) -> tuple[str, str, str, int, str]:
        size = d["size"]
        if not isinstance(size, int):
            raise TypeError("size")
        return str(d["name"]), str(d["version"]), str(d["arch"]), size, str(d["sha256"])

    @classmethod
    def from_fields(cls: type[D], fields: Mapping[str, str]) -> D:
        """From the package's stanza in the lists (`apt-cache show`)."""
        return cls(
            fields["Package"],
            fields["Version"],
            fields.get("Architecture", ARCH),
            int(fields.get("Size", "0") or 0),
            fields.get("SHA256", ""),
        )


@dataclass(frozen=True)
class Package(Deb):
    """A kernel's package and what it is to the kernel (after the Deb's fields)."""

    role: Role

    def to_json(self) -> dict[str, object]:
        return {"role": self.role.value, **super().to_json()}

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> "Package":
        return cls(*cls.fields_of(d), role=Role(d["role"]))


@dataclass(frozen=True)
class ResolvedKernel:
    """The exact packages a row stands for in today's lists."""

    row: KernelRow
    abi: str  # uname -r: "6.1.0-57-amd64", "7.2.13+deb14-amd64"
    version: str  # Debian version of the image package
    packages: tuple[Package, ...]

    @property
    def pins(self) -> tuple[str, ...]:
        return tuple(p.pin for p in self.packages)

    def of(self, role: Role) -> tuple[Package, ...]:
        return tuple(p for p in self.packages if p.role is role)

    @property
    def split(self) -> bool:
        """The image package only depends on the kernel and modules packages."""
        return bool(self.of(Role.BINARY))

    def to_json(self) -> dict[str, object]:
        return {"abi": self.abi, "version": self.version, "packages": [p.to_json() for p in self.packages]}

    @classmethod
    def from_json(cls, row: KernelRow, d: Mapping[str, object]) -> "ResolvedKernel":
        packages = d["packages"]
        if not isinstance(packages, list):
            raise TypeError("packages")
        return cls(row, str(d["abi"]), str(d["version"]), tuple(Package.from_json(p) for p in packages))
