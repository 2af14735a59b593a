"""Joining atlases (a multi-process run's parts) into one, by hard links, without copying data."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vizjax.atlas.files import (
    FOLDER_ATTR,
    _check_root,
    _open_h5,
    _text,
    data_dir,
    exemplars_name,
    new_data_dir,
)
from vizjax.atlas.identity import run_differences, stored_config
from vizjax.atlas.index import _Layer, _Store
from vizjax.atlas.lock import _acquire_lock
from vizjax.atlas.reader import open_atlas
from vizjax.atlas.segment import _geometry_text, _Segment
from vizjax.atlas.v1 import _copy_v1_rows, _v1_layers
from vizjax.durable import _os_reason, _replace_atomically, fault
from vizjax.errors import AtlasError


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (no data copied); copy where links are impossible."""
    tmp = dst.with_name(f".tmp-{dst.name}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:  # another file system, or one without hard links
        shutil.copyfile(src, tmp)
    _replace_atomically(tmp, dst)


def _remove_new_files(folder: Path, before: set[str] | None) -> None:
    """Delete the files a failed merge added to ``folder`` (and the folder if it made it)."""
    if not folder.is_dir():
        return
    for name in set(os.listdir(folder)) - (before or set()):
        with contextlib.suppress(OSError):
            (folder / name).unlink()
    if before is None:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _differences(a: dict[str, Any], a_path: Path, b: dict[str, Any], b_path: Path) -> list[Any]:
    """What makes the runs that wrote two atlases (their root attributes) different runs."""
    return run_differences(
        stored_config(a, a_path),
        stored_config(b, b_path),
        str(a.get("weights_sha256", "")),
        str(b.get("weights_sha256", "")),
    )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_target(out: Path, first: Path) -> None:
    """Refuse (one line naming the file) an ``out`` that merge would destroy: anything but
    nothing or an atlas of the same run as the parts (a text file, a folder, a foreign HDF5
    file, an atlas of another run), as ``atlas --out`` does."""
    if not out.exists() and not out.is_symlink():
        return
    with _open_h5(out) as f:
        _check_root(f, out)
        theirs = {k: _text(v) for k, v in f.attrs.items()}
    with _open_h5(first) as f:
        ours = {k: _text(v) for k, v in f.attrs.items()}
    diff = _differences(theirs, out, ours, first)
    if diff:
        from vizjax.config import describe

        raise AtlasError(
            f"refusing to replace {out}, an atlas of another run "
            f"({describe(diff, f'in {out.name}', f'in {first.name}')}); merge into another file"
        )


def merge_atlases(
    out: str | os.PathLike[str],
    parts: Sequence[str | os.PathLike[str]],
) -> None:
    """Join the done rows of ``parts`` into one atlas at ``out``, copying no data.

    All parts must come from one run (the same weights and config identity,
    :func:`vizjax.config.identity`: parts that a resumed run would accept) and have the same
    geometry per layer, else AtlasError. Format 2 parts' segment files are hard-linked into
    out's data folder (copied where the file system cannot link) and one new index maps them;
    format 1 parts' rows are copied into new segments. A filter done in several parts appears once: the
    row of the first part (in ``parts`` order) that has it done is mapped, the others are left
    out of the index' virtual datasets (the parts' files are never changed). Rows not done in any
    part are left out. An atlas already at ``out`` is merged too, as if named as the last part
    (the identity check applies to it as to any part, and its rows that no named part has done
    are kept: merging into an existing atlas never drops its rows); ``out`` may also be named
    among the parts (its own segments are reused in place). Root attributes come from the first
    part, the atlas id from ``out`` if it exists. Killed at any moment, ``out`` is the old atlas (or
    absent) or the new one: the index is replaced last, in one rename.
    """
    if not parts:
        raise AtlasError("merge needs at least one part")
    out = Path(out)
    parts = [Path(p) for p in parts]
    for p in parts:
        # The reader checks every part's structure first: a damaged part is refused in one line
        # before anything is linked or written.
        open_atlas(p).close()
    _check_target(out, parts[0])
    if out.exists() and not any(_same_file(p, out) for p in parts):
        # An existing atlas at out is one of the parts (the last: rows that a named part has
        # done too come from the named part), so merging into it never drops its rows.
        open_atlas(out).close()
        parts.append(out)
    new_id = _Store.new_id()  # out's own id, not the first part's (unless out is an atlas)
    existed = out.exists()
    folder = data_dir(out) if existed else new_data_dir(out, new_id)
    lock = _acquire_lock(out, folder)
    # What out's folder holds now: a failed merge removes what it added (nothing refers to it).
    before = None if lock.made_dir else set(os.listdir(folder))
    index_written = False
    sources: list[tuple[Path, int, dict[str, Any], Any]] = []  # (path, version, root, data)
    v1_files: list[h5py.File] = []
    store: _Store | None = None
    try:
        for p in parts:
            if not p.exists():
                raise AtlasError(f"no atlas at {p}")
            with _open_h5(p) as f:
                version = _check_root(f, p)
            if version == 2:
                s = _Store.load(p)
                sources.append((p, 2, s.root, s))
            else:
                f = _open_h5(p)
                v1_files.append(f)
                root = {k: _text(v) for k, v in f.attrs.items()}
                sources.append((p, 1, root, f))
        first_path, _, first_root, _ = sources[0]
        for p, _, root, _ in sources[1:]:
            diff = _differences(root, p, first_root, first_path)
            if diff:
                from vizjax.config import describe

                raise AtlasError(
                    f"cannot merge {p} with {first_path}: "
                    f"{describe(diff, f'in {p.name}', f'in {first_path.name}')}"
                )

        # Segments a killed merge linked in carry their part's id: they are out's to delete.
        linked_ids = frozenset(
            str(root["atlas_id"]) for _, v, root, _ in sources if v == 2 and "atlas_id" in root
        )
        root = dict(first_root)
        root["atlas_id"] = new_id
        root[FOLDER_ATTR] = folder.name
        if out.exists():
            # Keep what out's folder holds while the old index still refers to it.
            with contextlib.suppress(AtlasError):
                old = _Store.load(out)
                old.cleanup(linked_ids)
                old.close()
                root["atlas_id"] = old.id  # out stays the same atlas: its segments stay its own
        store = _Store(out, root)
        out_dir = store.dir.resolve() if store.dir.exists() else None
        linked: dict[str, _Segment] = {}  # source path -> segment in out's folder

        def local(seg: _Segment, name: str) -> _Segment:
            key = str(seg.path.resolve())
            if key not in linked:
                if out_dir is not None and seg.path.resolve().parent == out_dir:
                    linked[key] = seg  # already out's own
                else:
                    dst = store.new_segment_path(name)
                    _link_or_copy(seg.path, dst)
                    fault("merge.linked")
                    linked[key] = dataclasses.replace(seg, path=dst, fd=-1, writable=False)
            return linked[key]

        chosen: dict[str, set[int]] = {}
        exemplar_src: dict[str, Path] = {}
        for p, version, _, data in sources:
            layers = (
                {n: (lay.geometry, lay) for n, lay in data.layers.items()}
                if version == 2
                else {n: (geo, None) for n, (geo, _, _) in _v1_layers(data).items()}
            )
            for name, (geometry, lay) in layers.items():
                state = store.layers.get(name)
                if state is None:
                    c = geometry[0] if geometry else lay.num_filters
                    state = store.layers[name] = _Layer(c, None, None, None)
                if geometry is not None:
                    if state.geometry is None and not state.runs:
                        state.k, state.image_shape, state.steps, state.image_channels = geometry[1:]
                    if state.geometry != geometry:
                        raise AtlasError(
                            f"cannot merge {p}: layer {name} has {_geometry_text(geometry)}, "
                            f"another part has {_geometry_text(state.geometry or geometry)}"
                        )
                taken = chosen.setdefault(name, set())
                if version == 2:
                    if lay.exemplars and name not in exemplar_src:
                        exemplar_src[name] = data.dir / exemplars_name(name)
                    for seg, a, b in lay.runs:
                        run_start = None
                        for r in range(a, b + 1):
                            ok = r < b and seg.done[r] and int(seg.filters[r]) not in taken
                            if ok:
                                taken.add(int(seg.filters[r]))
                                run_start = r if run_start is None else run_start
                            elif run_start is not None:
                                state.add_run(local(seg, name), run_start, r)
                                run_start = None
                else:
                    _, filters, done = _v1_layers(data)[name]
                    rows = [r for r in np.flatnonzero(done) if int(filters[r]) not in taken]
                    if rows:
                        taken.update(int(filters[r]) for r in rows)
                        seg = store.add_segment(name, filters[rows])
                        rows = np.asarray(rows)
                        _copy_v1_rows(name, data["layers"][name], seg, rows, np.arange(len(rows)))
        for name, src in exemplar_src.items():
            dst = store.dir / exemplars_name(name)
            if src.exists() and src.resolve() != dst.resolve():
                _link_or_copy(src, dst)
            store.layers[name].exemplars = src.exists()
        fault("merge.index")
        store.write_index(create=not existed)
        index_written = True
        # The old index' segments that the new one does not map are nobody's now.
        store.cleanup(linked_ids)
    except OSError as e:
        raise AtlasError(f"cannot write atlas {out}: {_os_reason(e)}") from e
    finally:
        if not index_written:
            _remove_new_files(folder, before)
        for f in v1_files:
            f.close()
        for _, version, _, data in sources:
            if version == 2:
                data.close()
        if store is not None:
            store.close()
        lock.release()
