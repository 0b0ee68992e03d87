"""fmrilm: a Hugging Face-native implementation of fMRI-LM (Wei et al. 2025, arXiv 2511.21760)."""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForPreTraining

from .configuration_fmrilm import FmriTokenizerConfig
from .errors import FmriInputError
from .feature_extraction_fmrilm import FmriFeatureExtractor
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

# -- Stage 2/3: the fMRI-language model and its processor ------------------------------------
from transformers import AutoModelForCausalLM, AutoProcessor  # noqa: E402

from .configuration_fmrilm import FmriLMConfig  # noqa: E402
from .modeling_fmrilm import FmriLMForCausalLM  # noqa: E402
from .processing_fmrilm import FmriProcessor  # noqa: E402

AutoConfig.register(FmriLMConfig.model_type, FmriLMConfig, exist_ok=True)
AutoModel.register(FmriLMConfig, FmriLMForCausalLM, exist_ok=True)
AutoModelForCausalLM.register(FmriLMConfig, FmriLMForCausalLM, exist_ok=True)
AutoFeatureExtractor.register(FmriLMConfig, FmriFeatureExtractor, exist_ok=True)
AutoProcessor.register(FmriLMConfig, FmriProcessor, exist_ok=True)
# auto_map gets AutoConfig, AutoModelForCausalLM and (FmriLMConfig.to_dict) AutoModel; the
# processor's files and its AutoProcessor entry are saved by the processor.
FmriLMConfig.register_for_auto_class()
FmriLMForCausalLM.register_for_auto_class("AutoModelForCausalLM")
FmriProcessor.register_for_auto_class("AutoProcessor")

__all__ += ["FmriLMConfig", "FmriLMForCausalLM", "FmriProcessor"]
