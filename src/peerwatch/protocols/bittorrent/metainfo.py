"""Decoder for .torrent metainfo: v1 (BEP 3), v2 and hybrid (BEP 52), BEP 47 file attributes.

Pure and total: `parse_metainfo` takes bytes and returns a frozen `Metainfo`, and on any input that
is not a valid torrent it raises `MetainfoError` (never anything else) with a message naming the
field. Hostile input is bounded: total size, nesting depth, token count and file count are capped
before anything is built.

The infohashes are computed over the bencoded ``info`` dictionary *exactly as it appears in the
file* (BEP 3: "the SHA1 hash of the bencoded form of the info value from the metainfo file"). A
small bounded span scanner (`_info_span`) finds that slice; we never hash a re-encoding.

`fastbencode` decodes strictly canonical bencode only (sorted unique dict keys, no leading zeros,
no trailing data), so a torrent written by a client that did not sort its keys is rejected with a
`MetainfoError` rather than hashed to a value nobody else would compute.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from peerwatch.errors import ProtocolError
from peerwatch.protocols.bittorrent.bencode import bdecode

#: Largest .torrent accepted. Real ones are kilobytes to a few MiB; v2 'piece layers' can add more.
MAX_METAINFO_SIZE = 64 * 1024 * 1024
#: Most files (padding files excluded) accepted in one torrent.
MAX_FILES = 250_000
#: Deepest container nesting accepted (v2 'file tree' nests one dict level per directory).
MAX_DEPTH = 512
#: Most bencode tokens walked; bounds CPU and memory before the decoder builds Python objects.
MAX_TOKENS = 8_000_000

_SHA1_LEN = 20
_SHA256_LEN = 32
_MIN_V2_PIECE_LENGTH = 16 * 1024  # BEP 52: "a power of two and at least 16KiB"
_INT_RE = re.compile(rb"-?[0-9]+")
_HEX_RE = re.compile(rb"[0-9a-fA-F]{32}")
_MAX_INT_DIGITS = 64


class MetainfoError(ProtocolError):
    """The bytes are not a valid torrent; `field` names the offending key (e.g. 'info.pieces')."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}" if field else message)


@dataclass(frozen=True, slots=True)
class MetainfoFile:
    """One content file of a torrent (BEP 47 padding files are never listed).

    `path` is the path a client saves the file under: for a multi-file torrent it starts with the
    torrent's `name` (the directory), for a single-file torrent it is just the file name.
    `location` names where the file is described in the metainfo, e.g. ``info.files[3]``.
    """

    path: tuple[str, ...]
    length: int
    location: str
    sha1: bytes | None = None  # BEP 47 'sha1': SHA-1 of the file's content (20 bytes)
    md5: bytes | None = None  # original BEP 3 'md5sum' (32 hex digits) or 'md5', as 16 raw bytes
    pieces_root: bytes | None = None  # BEP 52 'pieces root' (32 bytes); None for empty/v1 files
    attr: str = ""  # BEP 47 'attr' letters ('x' executable, 'h' hidden, 'l' symlink)

    @property
    def path_str(self) -> str:
        return "/".join(self.path)


@dataclass(frozen=True, slots=True)
class Metainfo:
    """A decoded .torrent. `btih` is set for v1 and hybrid torrents, `btmh` for v2 and hybrid."""

    name: str
    piece_length: int
    pieces: bytes  # v1 concatenated 20-byte SHA-1 piece hashes; b"" for a v2-only torrent
    files: tuple[MetainfoFile, ...]
    btih: bytes | None  # BEP 3: SHA-1 of the raw bencoded info dict
    btmh: bytes | None  # BEP 52: SHA-256 of the raw bencoded info dict
    announce: str | None
    announce_list: tuple[tuple[str, ...], ...]  # BEP 12 tiers
    private: bool  # BEP 27
    info_bytes: bytes  # the bencoded info dict exactly as in the file (also what BEP 9 serves)
    #: BEP 52 top-level 'piece layers': pieces root -> the file's concatenated 32-byte piece
    #: hashes. Outside the info dict, so not covered by the infohash: check a layer against its
    #: file's pieces root before trusting it. Empty for v1 torrents and for BEP 9 metadata.
    piece_layers: Mapping[bytes, bytes] = field(default_factory=dict, hash=False, repr=False)

    def piece_layer(self, f: MetainfoFile) -> bytes | None:
        """The file's BEP 52 piece layer (concatenated SHA-256 piece hashes), or None when the
        torrent carries none for it. A file of at most one piece never has one (BEP 52): its
        pieces root is the only hash."""
        if f.pieces_root is None:
            return None
        return self.piece_layers.get(f.pieces_root)

    @property
    def version(self) -> str:
        """'v1', 'v2' or 'hybrid' (BEP 52)."""
        if self.btih is not None and self.btmh is not None:
            return "hybrid"
        return "v2" if self.btmh is not None else "v1"

    @property
    def total_size(self) -> int:
        return sum(f.length for f in self.files)

    @property
    def piece_count(self) -> int:
        """Pieces on the wire (what a bitfield counts). v1 and hybrid: one SHA-1 per piece, padding
        included (BEP 47). v2-only: every non-empty file starts on a piece boundary (BEP 52)."""
        if self.pieces:
            return len(self.pieces) // _SHA1_LEN
        return sum(-(-f.length // self.piece_length) for f in self.files if f.length > 0)

    @property
    def btmh_truncated(self) -> bytes | None:
        """BEP 52: the v2 infohash truncated to 20 bytes, used where 20-byte ids are needed (DHT,
        trackers, the handshake)."""
        return None if self.btmh is None else self.btmh[:_SHA1_LEN]

    @property
    def trackers(self) -> tuple[str, ...]:
        """Every tracker URL once: BEP 12 tiers in order, then 'announce' if not already listed."""
        seen: dict[str, None] = {}
        for tier in self.announce_list:
            for url in tier:
                seen.setdefault(url, None)
        if self.announce:
            seen.setdefault(self.announce, None)
        return tuple(seen)


def parse_metainfo(
    data: bytes,
    *,
    max_size: int = MAX_METAINFO_SIZE,
    max_files: int = MAX_FILES,
) -> Metainfo:
    """Decode a .torrent; raise `MetainfoError` (and nothing else) if it is not a valid torrent."""
    if len(data) > max_size:
        raise MetainfoError(f"{len(data)} bytes is larger than the {max_size}-byte limit")
    data = bytes(data)
    start, end = _info_span(data, max_depth=MAX_DEPTH, max_tokens=MAX_TOKENS)
    try:
        root = bdecode(data)
    except Exception as exc:  # the Rust decoder raises ValueError; a total decoder leaks nothing
        raise MetainfoError(f"not valid canonical bencode: {exc}") from None
    if not isinstance(root, dict):  # pragma: no cover - _info_span already checked for 'd'
        raise MetainfoError("top level is not a dictionary")
    info_bytes = data[start:end]
    return _decode(root, info_bytes, max_files=max_files)


# --- span scanner -------------------------------------------------------------------------------


def _info_span(data: bytes, *, max_depth: int, max_tokens: int) -> tuple[int, int]:
    """Walk the whole bencoded top-level dict once (bounded) and return the slice of its 'info'
    value. Checks structure only (lengths, integer syntax, nesting); fastbencode checks the rest."""
    n = len(data)
    if n == 0 or data[0] != ord("d"):
        raise MetainfoError("not a bencoded dictionary (a .torrent starts with 'd')")
    pos = 1
    depth = 1
    tokens = 0
    expect_key = True  # in the top-level dict: a key comes next, else that key's value
    key = b""
    value_start = -1  # where the current top-level value began, -1 while reading a key
    span: tuple[int, int] | None = None
    while True:
        tokens += 1
        if tokens > max_tokens:
            raise MetainfoError(f"more than {max_tokens} bencode values")
        if pos >= n:
            raise MetainfoError(f"truncated: input ends at byte {n} inside an open container")
        c = data[pos]
        if depth == 1:
            if expect_key and c != ord("e") and not ord("0") <= c <= ord("9"):
                raise MetainfoError(f"dictionary key at byte {pos} is not a string")
            if not expect_key and value_start < 0:
                value_start = pos
        if c == ord("e"):
            depth -= 1
            pos += 1
            if depth == 0:
                if not expect_key:
                    raise MetainfoError(f"key {key!r} has no value")
                break
        elif c in (ord("d"), ord("l")):
            depth += 1
            if depth > max_depth:
                raise MetainfoError(f"nesting deeper than {max_depth} levels")
            pos += 1
        elif c == ord("i"):
            stop = data.find(b"e", pos + 1, pos + 2 + _MAX_INT_DIGITS)
            if stop < 0 or not _INT_RE.fullmatch(data, pos + 1, stop):
                raise MetainfoError(f"bad integer at byte {pos}")
            pos = stop + 1
        elif ord("0") <= c <= ord("9"):
            colon = data.find(b":", pos, pos + 12)
            if colon < 0 or not data[pos:colon].isdigit():
                raise MetainfoError(f"bad string length at byte {pos}")
            str_end = colon + 1 + int(data[pos:colon])
            if str_end > n:
                raise MetainfoError(f"truncated: string at byte {pos} runs past the end")
            if depth == 1 and expect_key:
                key = data[colon + 1 : str_end]
            pos = str_end
        else:
            raise MetainfoError(f"unexpected byte {c:#04x} at byte {pos}")
        if depth == 1:  # a key was read, or a top-level value (scalar or container) just ended
            if expect_key:
                expect_key = False
            else:
                if key == b"info":
                    if span is not None:
                        raise MetainfoError("duplicate key", field="info")
                    span = (value_start, pos)
                expect_key = True
                value_start = -1
    if pos != n:
        raise MetainfoError(f"{n - pos} bytes of trailing data after the top-level dictionary")
    if span is None:
        raise MetainfoError("missing", field="info")
    return span


# --- field decoding -----------------------------------------------------------------------------

_Dict = dict[bytes, object]


def _text(raw: bytes) -> str:
    # Names are UTF-8 by convention (BEP 3); foreign encodings are kept readable, not rejected.
    return raw.decode("utf-8", errors="replace")


def _dict(d: _Dict, key: bytes, field: str) -> _Dict:
    v = d.get(key)
    if v is None:
        raise MetainfoError("missing", field=field)
    if not isinstance(v, dict):
        raise MetainfoError("not a dictionary", field=field)
    return v


def _int(d: _Dict, key: bytes, field: str, *, required: bool = True) -> int | None:
    v = d.get(key)
    if v is None:
        if required:
            raise MetainfoError("missing", field=field)
        return None
    if not isinstance(v, int) or isinstance(v, bool):
        raise MetainfoError("not an integer", field=field)
    return v


def _length(d: _Dict, key: bytes, field: str) -> int:
    v = _int(d, key, field)
    if v is None or v < 0:
        raise MetainfoError(f"negative length {v}", field=field)
    return v


def _bytes(d: _Dict, key: bytes, field: str, *, required: bool = True) -> bytes | None:
    v = d.get(key)
    if v is None:
        if required:
            raise MetainfoError("missing", field=field)
        return None
    if not isinstance(v, bytes):
        raise MetainfoError("not a byte string", field=field)
    return v


def _fixed(d: _Dict, key: bytes, field: str, size: int) -> bytes | None:
    v = _bytes(d, key, field, required=False)
    if v is not None and len(v) != size:
        raise MetainfoError(f"must be {size} bytes, got {len(v)}", field=field)
    return v


def _md5(d: _Dict, prefix: str) -> bytes | None:
    # The original BitTorrent spec lists an optional 'md5sum' of 32 hex digits; some tools write
    # 'md5', and some write the 16 raw bytes. All three are accepted.
    for key in (b"md5sum", b"md5"):
        field = f"{prefix}.{key.decode()}"
        v = _bytes(d, key, field, required=False)
        if v is None:
            continue
        if len(v) == 16:
            return v
        if _HEX_RE.fullmatch(v):
            return bytes.fromhex(v.decode("ascii"))
        raise MetainfoError(f"must be 32 hex digits or 16 bytes, got {len(v)} bytes", field=field)
    return None


def _attr(d: _Dict, field: str) -> str:
    v = _bytes(d, b"attr", field, required=False)
    return "" if v is None else _text(v)


def _decode(root: _Dict, info_bytes: bytes, *, max_files: int) -> Metainfo:
    info = _dict(root, b"info", "info")
    raw_name = _bytes(info, b"name", "info.name")
    assert raw_name is not None
    name = _name(info, raw_name)
    piece_length = _int(info, b"piece length", "info.piece length")
    assert piece_length is not None
    if piece_length <= 0:
        raise MetainfoError(f"must be positive, got {piece_length}", field="info.piece length")

    meta_version = _int(info, b"meta version", "info.meta version", required=False)
    if meta_version is not None and meta_version != 2:
        raise MetainfoError(f"unsupported version {meta_version}", field="info.meta version")
    is_v2 = meta_version == 2
    # BEP 52: a hybrid torrent carries the v1 keys ('pieces' with 'length' or 'files') as well.
    is_v1 = b"pieces" in info or not is_v2
    if is_v2 and (piece_length < _MIN_V2_PIECE_LENGTH or piece_length & (piece_length - 1)):
        raise MetainfoError(
            f"v2 needs a power of two of at least 16 KiB, got {piece_length}",
            field="info.piece length",
        )

    v1_files: list[MetainfoFile] | None = None
    pieces = b""
    if is_v1:
        pieces_raw = _bytes(info, b"pieces", "info.pieces")
        assert pieces_raw is not None
        pieces = pieces_raw
        if len(pieces) % _SHA1_LEN:
            raise MetainfoError(
                f"length {len(pieces)} is not a multiple of {_SHA1_LEN}", field="info.pieces"
            )
        v1_files, v1_total = _v1_files(info, name, max_files)
        expected = -(-v1_total // piece_length)  # BEP 3: one SHA-1 per piece, the last may be short
        if len(pieces) // _SHA1_LEN != expected:
            raise MetainfoError(
                f"{len(pieces) // _SHA1_LEN} piece hashes for {v1_total} bytes in pieces of "
                f"{piece_length} (expected {expected})",
                field="info.pieces",
            )

    v2_files: list[MetainfoFile] | None = None
    if is_v2:
        v2_files = _v2_files(info, name, max_files)

    files = _merge(v1_files, v2_files)
    announce_raw = _bytes(root, b"announce", "announce", required=False)
    private = _int(info, b"private", "info.private", required=False)
    return Metainfo(
        name=name,
        piece_length=piece_length,
        pieces=pieces,
        files=files,
        btih=hashlib.sha1(info_bytes, usedforsecurity=False).digest() if is_v1 else None,
        btmh=hashlib.sha256(info_bytes).digest() if is_v2 else None,
        announce=None if announce_raw is None else _text(announce_raw),
        announce_list=_announce_list(root),
        private=private == 1,
        info_bytes=info_bytes,
        piece_layers=_piece_layers(root) if is_v2 else {},
    )


def _piece_layers(root: _Dict) -> dict[bytes, bytes]:
    """BEP 52 'piece layers': a dict keyed by 32-byte pieces roots, each value the concatenated
    32-byte hashes of that file's pieces. Shapes are checked here; the hashes are checked against
    the pieces root by whoever relies on them (the dict is outside the signed info dict)."""
    raw = root.get(b"piece layers")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise MetainfoError("not a dictionary", field="piece layers")
    out: dict[bytes, bytes] = {}
    for key, value in raw.items():
        if len(key) != _SHA256_LEN:
            raise MetainfoError(f"key of {len(key)} bytes, expected 32", field="piece layers")
        where = f"piece layers[{key.hex()}]"
        if not isinstance(value, bytes):
            raise MetainfoError("not a byte string", field=where)
        if not value or len(value) % _SHA256_LEN:
            raise MetainfoError(
                f"length {len(value)} is not a positive multiple of 32", field=where
            )
        out[key] = value
    return out


def _name(info: _Dict, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # Some old clients store a legacy-encoded 'name' and a UTF-8 copy in 'name.utf-8'.
        alt = info.get(b"name.utf-8")
        if isinstance(alt, bytes):
            return _text(alt)
        return _text(raw)


def _v1_files(info: _Dict, name: str, max_files: int) -> tuple[list[MetainfoFile], int]:
    """BEP 3 'length' (single file) or 'files' (multi-file); BEP 47 padding files are counted in
    the piece total but not listed."""
    has_files = b"files" in info
    if has_files == (b"length" in info):
        raise MetainfoError("needs exactly one of 'length' and 'files'", field="info")
    if not has_files:
        length = _length(info, b"length", "info.length")
        f = MetainfoFile(
            path=(name,),
            length=length,
            location="info",
            sha1=_fixed(info, b"sha1", "info.sha1", _SHA1_LEN),
            md5=_md5(info, "info"),
            attr=_attr(info, "info.attr"),
        )
        return [f], length
    entries = info[b"files"]
    if not isinstance(entries, list):
        raise MetainfoError("not a list", field="info.files")
    out: list[MetainfoFile] = []
    total = 0
    for i, entry in enumerate(entries):
        where = f"info.files[{i}]"
        if not isinstance(entry, dict):
            raise MetainfoError("not a dictionary", field=where)
        length = _length(entry, b"length", f"{where}.length")
        total += length
        attr = _attr(entry, f"{where}.attr")
        if "p" in attr:  # BEP 47: padding file, aligns the next file to a piece boundary
            continue
        if len(out) >= max_files:
            raise MetainfoError(f"more than {max_files} files", field="info.files")
        out.append(
            MetainfoFile(
                path=(name, *_path(entry, f"{where}.path")),
                length=length,
                location=where,
                sha1=_fixed(entry, b"sha1", f"{where}.sha1", _SHA1_LEN),
                md5=_md5(entry, where),
                attr=attr,
            )
        )
    return out, total


def _path(entry: _Dict, field: str) -> tuple[str, ...]:
    parts = entry.get(b"path")
    if parts is None:
        raise MetainfoError("missing", field=field)
    if not isinstance(parts, list) or not parts:
        raise MetainfoError("not a non-empty list", field=field)
    out: list[str] = []
    for part in parts:
        if not isinstance(part, bytes):
            raise MetainfoError("element is not a byte string", field=field)
        out.append(_text(part))
    return tuple(out)


def _v2_files(info: _Dict, name: str, max_files: int) -> list[MetainfoFile]:
    """BEP 52 'file tree': nested dicts keyed by path component; a file is a dict whose only key
    is the empty string, mapping to {'length', 'pieces root'}. Walked iteratively, in key order
    (which canonical bencode makes the lexicographic byte order BEP 52 asks for)."""
    tree = _dict(info, b"file tree", "info.file tree")
    found: list[tuple[tuple[str, ...], MetainfoFile]] = []
    # Depth-first, children pushed in reverse so they pop in key order (files and directories
    # interleaved as the byte order puts them).
    stack: list[tuple[tuple[str, ...], bytes, object]] = [((), k, v) for k, v in tree.items()]
    stack.reverse()
    while stack:
        prefix, key, child = stack.pop()
        path = (*prefix, _text(key))
        where = f"info.file tree[{'/'.join(path)}]"
        if key == b"":
            raise MetainfoError("file entry mixed with directory entries", field=where)
        if not isinstance(child, dict):
            raise MetainfoError("not a dictionary", field=where)
        if b"" in child:
            if len(child) != 1:
                raise MetainfoError("file entry has sibling keys", field=where)
            leaf = child[b""]
            if not isinstance(leaf, dict):
                raise MetainfoError("not a dictionary", field=f"{where}['']")
            if len(found) >= max_files:
                raise MetainfoError(f"more than {max_files} files", field="info.file tree")
            found.append((path, _v2_file(leaf, path, where)))
        elif not child:
            raise MetainfoError("empty directory", field=where)
        else:
            stack.extend((path, k, v) for k, v in reversed(child.items()))
    if not found:
        raise MetainfoError("no files", field="info.file tree")
    # Like libtorrent: one file at the top of the tree is a single-file torrent saved under its
    # own name; otherwise the files live in a directory called 'name'.
    single = len(found) == 1 and len(found[0][0]) == 1
    return [
        MetainfoFile(
            path=p if single else (name, *p),
            length=f.length,
            location=f.location,
            pieces_root=f.pieces_root,
            attr=f.attr,
        )
        for p, f in found
    ]


def _v2_file(leaf: _Dict, path: tuple[str, ...], where: str) -> MetainfoFile:
    length = _length(leaf, b"length", f"{where}.length")
    root = _fixed(leaf, b"pieces root", f"{where}.pieces root", _SHA256_LEN)
    # BEP 52: 'pieces root' is present for every non-empty file.
    if length > 0 and root is None:
        raise MetainfoError("missing for a non-empty file", field=f"{where}.pieces root")
    return MetainfoFile(
        path=path,
        length=length,
        location=where,
        pieces_root=root if length > 0 else None,
        attr=_attr(leaf, f"{where}.attr"),
    )


def _merge(
    v1: list[MetainfoFile] | None, v2: list[MetainfoFile] | None
) -> tuple[MetainfoFile, ...]:
    """A hybrid torrent describes the same files twice (BEP 52); keep v1 order and locations,
    add each file's v2 'pieces root', and reject a torrent whose two halves disagree."""
    if v1 is None:
        return tuple(v2 or ())
    if v2 is None:
        return tuple(v1)
    by_path = {f.path: f for f in v2}
    if len(by_path) != len(v1):
        raise MetainfoError(
            f"hybrid torrent lists {len(v1)} v1 files but {len(by_path)} v2 files",
            field="info.file tree",
        )
    out: list[MetainfoFile] = []
    for f in v1:
        other = by_path.get(f.path)
        if other is None or other.length != f.length:
            raise MetainfoError(
                f"hybrid torrent: file {f.path_str!r} differs between 'files' and 'file tree'",
                field=f.location,
            )
        out.append(
            MetainfoFile(
                path=f.path,
                length=f.length,
                location=f.location,
                sha1=f.sha1,
                md5=f.md5,
                pieces_root=other.pieces_root,
                attr=f.attr or other.attr,
            )
        )
    return tuple(out)


def _announce_list(root: _Dict) -> tuple[tuple[str, ...], ...]:
    """BEP 12 'announce-list': a list of tiers, each a list of tracker URLs."""
    tiers = root.get(b"announce-list")
    if tiers is None:
        return ()
    if not isinstance(tiers, list):
        raise MetainfoError("not a list", field="announce-list")
    out: list[tuple[str, ...]] = []
    for i, tier in enumerate(tiers):
        if not isinstance(tier, list):
            raise MetainfoError("tier is not a list", field=f"announce-list[{i}]")
        urls: list[str] = []
        for url in tier:
            if not isinstance(url, bytes):
                raise MetainfoError("URL is not a byte string", field=f"announce-list[{i}]")
            urls.append(_text(url))
        if urls:
            out.append(tuple(urls))
    return tuple(out)
