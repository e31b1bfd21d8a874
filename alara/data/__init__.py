"""Data: the LoDoPaB-CT layout (reader, writer, checks), synthetic patients, DICOM import.

A LoDoPaB-CT download and a data set written by alara are read by the same
:class:`LoDoPaBDataset`; see ``docs/data.md``.
"""

from alara.data.check import check_dataset
from alara.data.dicom import crop_to_grid, import_dicom, read_ct_slice, resample_to_grid
from alara.data.layout import DataError, inspect_split
from alara.data.lesions import LESION_COLUMNS, LesionRecord, read_lesions
from alara.data.lodopab import (
    LODOPAB_LENGTHS, SAMPLES_PER_FILE, SPLITS, data_filename, hu_to_mu, hu_to_x,
    patient_ids_filename,
)
from alara.data.metadata import DatasetInfo, read_metadata, write_metadata
from alara.data.phantoms import Patient, render_slice, sample_patient
from alara.data.reader import LoDoPaBDataset
from alara.data.synth import (
    fine_geometry, generate_dataset, simulate_observation, small_geometry,
)
from alara.data.writer import SplitWriter, write_hdf5, write_patient_ids

__all__ = [
    "DataError", "DatasetInfo", "LESION_COLUMNS", "LODOPAB_LENGTHS", "LesionRecord",
    "LoDoPaBDataset", "Patient", "read_lesions",
    "SAMPLES_PER_FILE", "SPLITS", "SplitWriter", "check_dataset", "crop_to_grid", "data_filename",
    "fine_geometry", "generate_dataset", "hu_to_mu", "hu_to_x", "import_dicom",
    "inspect_split", "patient_ids_filename", "read_ct_slice", "read_metadata",
    "render_slice", "resample_to_grid", "sample_patient", "simulate_observation",
    "small_geometry", "write_hdf5", "write_metadata", "write_patient_ids",
]
