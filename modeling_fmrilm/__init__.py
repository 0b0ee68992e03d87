"""fmrilm: a Hugging Face-native implementation of fMRI-LM (Wei et al. 2025, arXiv 2511.21760)."""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForPreTraining

from .errors import FmriInputError
from .feature_extraction_fmrilm import FmriFeatureExtractor
from .configuration_fmrilm import FmriTokenizerConfig
from .modeling_fmri_tokenizer import (
    FmriTokenizerForPreTraining,
    FmriTokenizerForPreTrainingOutput,
    FmriTokenizerModel,
    FmriTokenizerOutput,
)

__version__ = "0.1.0"

AutoConfig.register(FmriTokenizerConfig.model_type, FmriTokenizerConfig, exist_ok=True)
AutoModel.register(FmriTokenizerConfig, FmriTokenizerModel, exist_ok=True)
AutoModelForPreTraining.register(FmriTokenizerConfig, FmriTokenizerForPreTraining, exist_ok=True)
AutoFeatureExtractor.register(FmriTokenizerConfig, FmriFeatureExtractor, exist_ok=True)
# save_pretrained then writes auto_map (both model classes, see FmriTokenizerPreTrainedModel.save_pretrained)
# and copies the code, for trust_remote_code=True loading.
FmriTokenizerConfig.register_for_auto_class()
FmriTokenizerModel.register_for_auto_class("AutoModel")
FmriTokenizerForPreTraining.register_for_auto_class("AutoModelForPreTraining")
FmriFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")

__all__ = [
    "FmriFeatureExtractor",
    "FmriInputError",
    "FmriTokenizerConfig",
    "FmriTokenizerForPreTraining",
    "FmriTokenizerForPreTrainingOutput",
    "FmriTokenizerModel",
    "FmriTokenizerOutput",
    "__version__",
]
