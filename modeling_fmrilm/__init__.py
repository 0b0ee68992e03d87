"""fmrilm: a Hugging Face-native implementation of fMRI-LM (Wei et al. 2025, arXiv 2511.21760)."""

from .errors import FmriInputError
from .feature_extraction_fmrilm import FmriFeatureExtractor

__version__ = "0.1.0"

__all__ = ["FmriFeatureExtractor", "FmriInputError", "__version__"]
