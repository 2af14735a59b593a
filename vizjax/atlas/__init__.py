"""The atlas: every filter's optimized images (and measures) of a run, in HDF5, crash-safe.

Format v2 (what this package writes; the fields are the table in :mod:`vizjax.schema`)::

    OUT.h5              the index: a small HDF5 file, only ever replaced whole (tmp, fsync, rename)
    OUT.<id>.d/         the data folder (travels with OUT.h5; named by the atlas' id[:8])
      <layer>.<seq>.h5      a segment: rows of one layer added by one run, fixed layout
      exemplars.<layer>.h5  dataset exemplars of one layer (written whole, tmp + rename)
                            (<layer> in a file name: its stem, vizjax.names.file_stem; the
                            index' group /layers/<layer> is named by vizjax.names.h5_key)
      .lock                 flock of the single writer (never beside the user's files)
      ...                   sidecar files of other modules (:func:`sidecar_path`)

The index holds the root attributes and, per layer, one *virtual dataset* (HDF5 VDS) per field
that concatenates the layer's segments row-wise, with source paths relative to the index' folder
(``OUT.<id>.d/<file>``), so plain h5py reads an atlas as if it were one file, from any working
directory, also after the index is renamed (any name) and moved with its folder (the folder keeps
its name, which the index records in ``data_folder``); a new atlas at the old name gets a folder of
its own. An index written before (``OUT.h5.d``, no ``data_folder``) is read as it is; renamed
together with its folder, its virtual datasets still name the old folder: the reader then reads
the segments directly, and the next writer rewrites the index with the folder's name recorded.

Crash safety. A segment is created once, for the rows one run adds to one layer, with every
dataset contiguous, uncompressed, allocated early and never filled (the file is sparse: no disk is
spent before rows are written), then closed: its HDF5 metadata is never touched again. Rows are
written with ``os.pwrite`` at the offsets HDF5 reports, data first, ``fdatasync``, then the rows'
``done`` bytes, ``fdatasync``. So ``kill -9`` at any moment leaves valid HDF5 files in which every
row whose ``done`` is true is complete, a commit costs the chunk's bytes whatever the atlas' size,
and nothing is copied. The index is rewritten (small) when a run adds rows to a layer, when a
layer ends (the per-layer datasets), and for exemplars; segments a killed writer created but no
index refers to, and temp files, are deleted by the next writer: only segments carrying this
atlas' ``atlas_id`` (a root attribute; every segment has it), so the data of another index (one
moved away from this name) is never deleted. The index' temp file is written in the data folder.

Single writer. ``.lock`` in the data folder is ``flock``ed by the writer for its lifetime; the kernel drops the
lock when the process dies, so a killed run never blocks the next one. Readers need no lock.

Format v1 (one HDF5 file, see :data:`vizjax.schema.V1_ROW_FIELDS`) stays readable: :func:`open_atlas`
presents it with v2 names and shapes; a writer (or :func:`upgrade`) converts it to v2 first.

Multi-host runs write one part per process (:func:`part_path`) and :func:`merge_atlases` joins them
without copying data (hard links).

The package, one file per job (the data's path: results -> :mod:`.writer` -> :mod:`.segment`
files and the :mod:`.index` -> :mod:`.reader`)::

    lock       the single writer's flock, in the atlas' own data folder (vizjax.durable does
               the fsync, atomic replace and pwrite of every file vizjax writes)
    files      file names (index, data folder, parts, sidecars); what makes a file an atlas
    identity   the refusals to mix runs (what identifies a run: vizjax.config)
    segment    segment files: create, open, write rows durably
    index      the index in memory and its rewriting as virtual datasets
    rows       a chunk of results checked against the schema
    writer     AtlasWriter: create or resume, begin layers, commit chunks, set fields
    exemplars  dataset exemplars stored beside the rows
    v1         format 1: read, upgrade
    merge      join parts into one atlas by hard links
    reader     open_atlas, Atlas, AtlasLayer, LazyField
"""

from vizjax.atlas.exemplars import write_exemplars
from vizjax.atlas.files import FORMAT, FORMAT_VERSION, data_dir, part_path, sidecar_path
from vizjax.atlas.merge import merge_atlases
from vizjax.atlas.reader import Atlas, AtlasLayer, LazyField, open_atlas
from vizjax.atlas.rows import ChunkResult
from vizjax.atlas.segment import Geometry
from vizjax.atlas.v1 import upgrade
from vizjax.atlas.writer import AtlasWriter

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Atlas",
    "AtlasLayer",
    "AtlasWriter",
    "ChunkResult",
    "Geometry",
    "LazyField",
    "data_dir",
    "merge_atlases",
    "open_atlas",
    "part_path",
    "sidecar_path",
    "upgrade",
    "write_exemplars",
]
