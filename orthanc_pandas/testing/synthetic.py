"""Generated DICOM data with known answers: series of any geometry, and whole archives.

Used by the tests (geometry with a known affine), the benchmarks (20,000+ instances) and the
demo (a CT phantom). Everything is made in memory with pydicom; nothing is downloaded.

Examples
--------
>>> from orthanc_pandas.testing.synthetic import make_series, to_bytes
>>> slices = make_series(n_slices=4, rows=8, cols=8)
>>> len(slices), slices[0].Modality
(4, 'CT')
>>> len(to_bytes(slices[0])) > 128
True
"""

from __future__ import annotations

__all__ = ["make_series", "make_multiframe", "make_mosaic", "make_seg", "to_bytes", "phantom", "generate_archive",
           "uid"]

import copy
import io
import math
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

_ROOT = "1.2.826.0.1.3680043.10.1234."  # a UID root for generated, non-clinical data


_SOP_CLASS = {"CT": CTImageStorage, "MR": MRImageStorage,
              "PT": "1.2.840.10008.5.1.4.1.1.128"}  # Positron Emission Tomography Image


SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


MULTIFRAME_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7.3"  # grayscale word


def uid(*parts: object) -> str:
    """A deterministic UID from ``parts`` (same inputs, same UID: reruns hit the same ids)."""
    if not parts:
        return generate_uid(prefix=_ROOT)
    return generate_uid(prefix=_ROOT, entropy_srcs=[str(p) for p in parts])


def phantom(rows: int, cols: int, z: float = 0.0, *, dtype=np.int16) -> np.ndarray:
    """A simple head-like phantom slice: an ellipse of 'tissue' with two 'ventricles'.

    Stored values (before rescale with intercept -1024): air 0, tissue ~1064, bright spots.
    """
    yy, xx = np.mgrid[0:rows, 0:cols]
    cy, cx = (rows - 1) / 2, (cols - 1) / 2
    r = ((yy - cy) / (0.42 * rows)) ** 2 + ((xx - cx) / (0.34 * cols)) ** 2
    img = np.where(r <= 1, 1064, 0).astype(np.float64)
    for sx in (-0.12, 0.12):
        rr = ((yy - cy) / (0.12 * rows)) ** 2 + ((xx - cx - sx * cols) / (0.05 * cols)) ** 2
        img[rr <= 1] = 1030
    img += 40 * np.sin(z / 7.0) * (r <= 1)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    if info is not None:
        img = np.clip(img, info.min, info.max)
    return img.astype(dtype)


def make_series(n_slices: int = 10, rows: int = 64, cols: int = 64, *, modality: str = "CT",
                patient_id: str = "SYN0001", patient_name: str = "Synthetic^Patient",
                patient_birth_date: str = "19700101", patient_sex: str = "O",
                study_uid: str | None = None, series_uid: str | None = None,
                study_date: str = "20200101", study_description: str = "Synthetic study",
                series_description: str = "synthetic", series_number: int = 1,
                orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
                pixel_spacing: Sequence[float] = (0.7, 0.8), slice_spacing: float = 2.5,
                origin: Sequence[float] = (-100.0, -110.0, 0.0),
                positions: Sequence[Sequence[float]] | None = None,
                dtype=np.int16, slope: float = 1.0, intercept: float = -1024.0,
                instance_numbers: str | Sequence[int] = "ascending",
                pixels: Callable[[int, int, int, float], np.ndarray] | None = None,
                extra: dict | None = None, per_slice: Callable[[int], dict] | None = None,
                seed: object = None) -> list[Dataset]:
    """A series of single-frame slices with exactly known geometry.

    Parameters
    ----------
    n_slices, rows, cols : int
        Size of the volume.
    orientation : 6 floats
        ImageOrientationPatient: row direction cosines then column direction cosines.
    pixel_spacing : (row spacing, column spacing)
        As DICOM's PixelSpacing: the distance between rows (along the column direction)
        first, then between columns (along the row direction).
    slice_spacing : float
        Distance between slices along the normal (row x column).
    origin : 3 floats
        ImagePositionPatient of the first slice (in position order).
    positions : list of 3-float positions, optional
        Explicit positions (for gaps, duplicates, tilt); overrides origin/slice_spacing.
    dtype : numpy integer dtype
        int16, uint16, uint8, int8 ... (PixelRepresentation and BitsAllocated follow).
    slope, intercept : float
        RescaleSlope and RescaleIntercept.
    instance_numbers : "ascending", "descending", "shuffled" or a list
        How InstanceNumber relates to position order.
    pixels : callable(index, rows, cols, z) -> 2D array, optional
        Pixel values of each slice; default: :func:`phantom`, or a ramp encoding the slice index.
    extra : dict, optional
        More elements by keyword, set on every slice.
    per_slice : callable(index) -> dict, optional
        More elements by keyword for slice ``index`` (in position order), set after ``extra``:
        values that vary within the series (tube current, echo time, b-value...). A value
        of ``None`` leaves the element out of that slice; a ``(tag, VR, value)`` triple adds a
        private or unknown tag.
    seed : object, optional
        Makes UIDs deterministic (same seed, same UIDs).

    Returns
    -------
    list of pydicom.Dataset
        In position order (not InstanceNumber order).
    """
    dtype = np.dtype(dtype)
    key = seed if seed is not None else generate_uid()
    study_uid = study_uid or uid("study", patient_id, key)
    series_uid = series_uid or uid("series", patient_id, key, series_number)
    frame_uid = uid("frame", study_uid)
    iop = np.asarray(orientation, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    if positions is None:
        positions = [np.asarray(origin, float) + k * slice_spacing * normal for k in range(n_slices)]
    positions = [np.asarray(p, float) for p in positions]
    n = len(positions)
    if isinstance(instance_numbers, str):
        order = list(range(1, n + 1))
        if instance_numbers == "descending":
            order = order[::-1]
        elif instance_numbers == "shuffled":
            # crc32, not hash(): str hashes are salted per process (PYTHONHASHSEED)
            rng = np.random.default_rng(zlib.crc32(str(key).encode()))
            order = list(rng.permutation(order) .tolist())
        numbers = order
    else:
        numbers = list(instance_numbers)
    out = []
    for k, pos in enumerate(positions):
        z = float(np.dot(pos, normal))
        if pixels is not None:
            arr = np.asarray(pixels(k, rows, cols, z)).astype(dtype)
        else:
            arr = phantom(rows, cols, z, dtype=dtype) if dtype.itemsize > 1 else \
                (np.arange(rows * cols).reshape(rows, cols) + k).astype(dtype)
        ds = _base_dataset(modality, patient_id, patient_name, patient_birth_date, patient_sex,
                           study_uid, study_date, study_description, series_uid,
                           series_description, series_number)
        ds.SOPInstanceUID = uid("sop", series_uid, k) if seed is not None else generate_uid(prefix=_ROOT)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.FrameOfReferenceUID = frame_uid
        ds.InstanceNumber = int(numbers[k])
        ds.ImagePositionPatient = [_ds(v) for v in pos]
        ds.ImageOrientationPatient = [_ds(v) for v in iop]
        ds.PixelSpacing = [_ds(v) for v in pixel_spacing]
        ds.SliceThickness = _ds(slice_spacing)
        ds.SliceLocation = _ds(z)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleIntercept = _ds(intercept)
        if modality == "CT":
            ds.RescaleType = "HU"
            ds.WindowCenter = "40"
            ds.WindowWidth = "400"
        _set_pixels(ds, arr)
        for kw, value in (extra or {}).items():
            setattr(ds, kw, value)
        for kw, value in (per_slice(k) if per_slice is not None else {}).items():
            if isinstance(value, tuple) and len(value) == 3:
                ds.add_new(*value)
            elif value is not None:
                setattr(ds, kw, value)
        out.append(ds)
    return out


def _csa2(tags: dict[str, tuple[str, list[str]]]) -> bytes:
    """A Siemens CSA2 header ("SV10") holding ``name -> (VR, values)``, as scanners write it."""
    out = [b"SV10", b"\x04\x03\x02\x01", struct.pack("<2I", len(tags), 77)]
    for name, (vr, values) in tags.items():
        out.append(struct.pack("<64si4s3i", name.encode(), len(values), vr.encode(), 0,
                               len(values), 77))
        for v in values:
            raw = v.encode() + b"\0"
            out.append(struct.pack("<4i", len(raw), len(raw), 77, len(raw)))
            out.append(raw + b"\0" * (-len(raw) % 4))
    return b"".join(out)


def make_mosaic(n_slices: int = 5, rows: int = 16, cols: int = 16, *,
                orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
                normal_sign: float = 1.0, n_volumes: int = 1, csa: bool = True,
                **series_kwargs) -> Dataset | list[Dataset]:
    """A Siemens mosaic: the slices of :func:`make_series` tiled into one image.

    The slices (``rows x cols`` each, placed as :func:`make_series` places them, at
    ``slice_spacing`` along ``normal_sign`` times the row x column normal) are tiled row by row
    into a square grid of ``ceil(sqrt(n_slices))`` tiles a side; ImagePositionPatient is the
    corner of the whole tiled image, as Siemens writes it. The slice count and the slice normal
    are in a CSA2 image header (0029,1010) and the count also in (0019,100A); ``csa=False``
    leaves the CSA header out.

    Returns
    -------
    pydicom.Dataset, or a list of ``n_volumes`` of them (one per time point: the same geometry,
    pixel values shifted by the volume number), with ``slices`` (the untiled datasets of the
    first volume) attached as ``ds.slices`` for checks.

    Examples
    --------
    >>> ds = make_mosaic(5, 4, 6)
    >>> ds.Rows, ds.Columns, list(ds.ImageType)
    (12, 18, ['ORIGINAL', 'PRIMARY', 'M', 'ND', 'MOSAIC'])
    """
    series_kwargs.setdefault("modality", "MR")
    series_kwargs.setdefault("slope", 1.0)
    series_kwargs.setdefault("intercept", 0.0)
    series_kwargs.setdefault("dtype", np.uint16)
    spacing = series_kwargs.pop("slice_spacing", 2.5)
    origin = np.asarray(series_kwargs.pop("origin", (-100.0, -110.0, 0.0)), float)
    iop = np.asarray(orientation, float)
    normal = normal_sign * np.cross(iop[:3], iop[3:])
    positions = [origin + k * spacing * normal for k in range(n_slices)]
    slices = make_series(n_slices, rows, cols, orientation=orientation, positions=positions,
                         **series_kwargs)
    grid = math.ceil(math.sqrt(n_slices))
    ps = [float(v) for v in slices[0].PixelSpacing]
    # the tiled image's corner: the first slice's corner moved back by the padding tiles
    corner = origin - iop[3:] * ps[0] * (grid - 1) * rows / 2 - iop[:3] * ps[1] * (grid - 1) * cols / 2
    csa_header = _csa2({"NumberOfImagesInMosaic": ("US", [str(n_slices)]),
                        "SliceNormalVector": ("FD", [f"{v:.8f}" for v in normal])})
    out = []
    for t in range(n_volumes):
        tiles = np.zeros((grid * rows, grid * cols), dtype=slices[0].pixel_array.dtype)
        for k, sl in enumerate(slices):
            r, c = divmod(k, grid)
            tiles[r * rows:(r + 1) * rows, c * cols:(c + 1) * cols] = sl.pixel_array + t
        ds = copy.deepcopy(slices[0])
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
        ds.ImagePositionPatient = [_ds(v) for v in corner]
        ds.SpacingBetweenSlices = _ds(spacing)
        ds.InstanceNumber = t + 1
        ds.AcquisitionNumber = t + 1
        if n_volumes > 1 or t:
            ds.SOPInstanceUID = uid("sop-mosaic", ds.SeriesInstanceUID, t)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for kw in ("SliceLocation",):
            if kw in ds:
                del ds[kw]
        ds.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
        ds.add_new(0x0019100A, "US", n_slices)
        if csa:
            ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
            ds.add_new(0x00291008, "CS", "IMAGE NUM 4")
            ds.add_new(0x00291010, "OB", csa_header)
        _set_pixels(ds, tiles)
        out.append(ds)
    out[0].slices = slices
    return out[0] if n_volumes == 1 else out


def make_multiframe(n_frames: int = 5, rows: int = 16, cols: int = 16, *,
                    per_frame_positions: bool = True, frame_order: str = "ascending",
                    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
                    pixel_spacing: Sequence[float] = (0.7, 0.8), slice_spacing: float = 2.5,
                    origin: Sequence[float] = (-100.0, -110.0, 0.0), dtype=np.int16,
                    slope: float = 1.0, intercept: float = -1024.0, patient_id: str = "SYN0001",
                    series_description: str = "multiframe", seed: object = None) -> Dataset:
    """One multi-frame instance with known geometry.

    With ``per_frame_positions`` it is an Enhanced CT image: orientation, pixel spacing and
    rescale in ``SharedFunctionalGroupsSequence``, one ``PlanePositionSequence`` per frame in
    ``PerFrameFunctionalGroupsSequence``. Without, a multi-frame secondary capture (a cine
    clip) with no per-frame geometry.

    Parameters
    ----------
    frame_order : "ascending" or "descending"
        Whether frame k sits at ``origin + k * slice_spacing * normal`` or the reverse (to
        check that readers sort frames by position).
    Other parameters
        As :func:`make_series`.

    Returns
    -------
    pydicom.Dataset
        Frame k holds ``phantom(rows, cols, z_k) + k`` (so every frame differs).

    Examples
    --------
    >>> ds = make_multiframe(3, 8, 8)
    >>> int(ds.NumberOfFrames), len(ds.PerFrameFunctionalGroupsSequence)
    (3, 3)
    """
    from pydicom.sequence import Sequence as Seq

    dtype = np.dtype(dtype)
    key = seed if seed is not None else generate_uid()
    ds = _base_dataset("CT" if per_frame_positions else "OT", patient_id, "Synthetic^Patient",
                       "19700101", "O", uid("study", patient_id, key), "20200101",
                       "Synthetic study", uid("series", patient_id, key, "mf"), series_description, 1)
    sop_class = ENHANCED_CT if per_frame_positions else MULTIFRAME_SECONDARY_CAPTURE
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = uid("sop", ds.SeriesInstanceUID) if seed is not None else generate_uid(prefix=_ROOT)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 1
    ds.NumberOfFrames = n_frames
    iop = np.asarray(orientation, float)
    normal = np.cross(iop[:3], iop[3:])
    ks = list(range(n_frames)) if frame_order == "ascending" else list(range(n_frames))[::-1]
    positions = [np.asarray(origin, float) + k * slice_spacing * normal for k in ks]
    frames = np.stack([phantom(rows, cols, float(np.dot(p, normal)), dtype=dtype) + dtype.type(f)
                       for f, p in enumerate(positions)])
    if per_frame_positions:
        ds.FrameOfReferenceUID = uid("frame", ds.StudyInstanceUID)
        shared = Dataset()
        po = Dataset()
        po.ImageOrientationPatient = [_ds(v) for v in iop]
        shared.PlaneOrientationSequence = Seq([po])
        pm = Dataset()
        pm.PixelSpacing = [_ds(v) for v in pixel_spacing]
        pm.SliceThickness = _ds(slice_spacing)
        shared.PixelMeasuresSequence = Seq([pm])
        pv = Dataset()
        pv.RescaleSlope = _ds(slope)
        pv.RescaleIntercept = _ds(intercept)
        pv.RescaleType = "HU"
        shared.PixelValueTransformationSequence = Seq([pv])
        ds.SharedFunctionalGroupsSequence = Seq([shared])
        per = []
        for f, p in enumerate(positions):
            item = Dataset()
            pp = Dataset()
            pp.ImagePositionPatient = [_ds(v) for v in p]
            item.PlanePositionSequence = Seq([pp])
            fc = Dataset()
            fc.InStackPositionNumber = f + 1
            item.FrameContentSequence = Seq([fc])
            per.append(item)
        ds.PerFrameFunctionalGroupsSequence = Seq(per)
    _set_pixels(ds, frames[0])
    ds.PixelData = frames.astype(frames.dtype.newbyteorder("<"), copy=False).tobytes()
    return ds


def _ds(v: float) -> str:
    """A DS string of at most 16 characters that round-trips v as closely as possible."""
    v = float(v)
    if v == 0:
        return "0"
    for prec in range(12, 4, -1):
        s = f"{v:.{prec}g}"
        if len(s) <= 16:
            return s
    return f"{v:.6g}"


def _base_dataset(modality, patient_id, patient_name, birth, sex, study_uid, study_date,
                  study_description, series_uid, series_description, series_number) -> Dataset:
    meta = FileMetaDataset()
    sop_class = _SOP_CLASS.get(modality, SECONDARY_CAPTURE)
    meta.MediaStorageSOPClassUID = sop_class
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _ROOT + "1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = birth
    ds.PatientSex = sex
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study_date
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study_description
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.Manufacturer = "orthanc-pandas"
    return ds


def _set_pixels(ds: Dataset, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    ds.Rows, ds.Columns = int(arr.shape[0]), int(arr.shape[1])
    if arr.ndim == 3:  # RGB, interleaved
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype.kind == "i" else 0
    ds.PixelData = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    ds["PixelData"].VR = "OW" if arr.dtype.itemsize > 1 else "OB"


def make_seg(source: Sequence[Dataset], masks: np.ndarray, labels: Sequence[str], *,
             series_number: int = 90, seed: object = "seg") -> Dataset:
    """A binary DICOM SEG of ``source`` slices (written by highdicom, the ``masks`` extra).

    Parameters
    ----------
    source : list of pydicom.Dataset
        The image slices, e.g. from :func:`make_series`.
    masks : numpy.ndarray of bool, shape (segment, slice, rows, cols)
        One mask per label, slices in the order of ``source``.
    labels : sequence of str
        Segment labels.

    Examples
    --------
    >>> ct = make_series(4, 16, 16)                                    # doctest: +SKIP
    >>> body = np.stack([ds.pixel_array > 0 for ds in ct])[None]        # doctest: +SKIP
    >>> seg = make_seg(ct, body, ["body"])                              # doctest: +SKIP
    """
    try:
        import highdicom as hd
    except ImportError:  # pragma: no cover - the extra is installed in tests
        raise ImportError("make_seg needs highdicom: pip install 'orthanc-pandas[masks]'") from None
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[:2] != (len(labels), len(source)):
        raise ValueError(f"masks has shape {masks.shape}; expected ({len(labels)} segments, "
                         f"{len(source)} slices, rows, cols).")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1, segment_label=label,
            segmented_property_category=hd.sr.CodedConcept("91723000", "SCT", "Anatomical Structure"),
            segmented_property_type=hd.sr.CodedConcept("85756007", "SCT", "Tissue"),
            algorithm_type="MANUAL")
        for i, label in enumerate(labels)]
    return hd.seg.Segmentation(
        source_images=list(source), pixel_array=np.moveaxis(masks, 0, -1).astype(np.uint8),
        segmentation_type="BINARY", segment_descriptions=descriptions,
        series_instance_uid=uid("seg-series", seed), series_number=series_number,
        sop_instance_uid=uid("seg-sop", seed), instance_number=1, manufacturer="orthanc-pandas",
        manufacturer_model_name="synthetic", software_versions="1", device_serial_number="1")


def to_bytes(ds: Dataset) -> bytes:
    """Encode a dataset as a DICOM Part 10 file."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def generate_archive(n_patients: int = 40, studies_per_patient: int = 2, series_per_study: int = 5,
                     instances_per_series: int = 50, *, rows: int = 8, cols: int = 8,
                     seed: object = "archive") -> Iterator[bytes]:
    """Encoded DICOM files of a whole synthetic archive, quickly (for scale tests).

    The defaults give 40 x 2 x 5 x 50 = 20,000 small CT instances. UIDs are deterministic for
    a given ``seed``, so a regenerated archive has the same Orthanc ids.
    """
    template = make_series(1, rows, cols, seed=seed)[0]
    modalities = ("CT", "MR", "CT", "PT", "CT")
    for p in range(n_patients):
        pid = f"PAT{p:06d}"
        for s in range(studies_per_patient):
            study_uid = uid(seed, pid, s)
            for r in range(series_per_study):
                series_uid = uid(seed, pid, s, r)
                for i in range(instances_per_series):
                    ds = template
                    ds.PatientID = pid
                    ds.PatientName = f"Synthetic^{p:06d}"
                    ds.PatientSex = "FM"[p % 2]
                    ds.PatientBirthDate = f"{1940 + p % 60}0101"
                    ds.StudyInstanceUID = study_uid
                    ds.StudyDate = f"{2010 + s % 12}{1 + p % 12:02d}15"
                    ds.StudyDescription = f"Study {s}"
                    ds.SeriesInstanceUID = series_uid
                    ds.SeriesNumber = r + 1
                    ds.Modality = modalities[r % len(modalities)]
                    ds.SeriesDescription = f"series {r}"
                    ds.SOPInstanceUID = uid(seed, pid, s, r, i)
                    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                    ds.InstanceNumber = i + 1
                    ds.ImagePositionPatient = ["-100", "-100", _ds(2.5 * i)]
                    ds.SliceLocation = _ds(2.5 * i)
                    yield to_bytes(ds)
