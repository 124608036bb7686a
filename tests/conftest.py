"""Session-scoped fixtures: each tiny checkpoint and small world is built once per test run and shared read-only.

Builders live in `fgclip_lmm.testing`; a test that needs different sizes or seeds calls them itself. Fixtures
hand out paths into pytest's session temp dir: a test must write its own outputs under its `tmp_path`.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fgclip_lmm import testing

# The suite shares 2 CPU cores: one intra-op thread avoids oversubscription stalls on these tiny matrices.
torch.set_num_threads(1)
# What every subprocess test runs with: offline, one OpenMP thread, DeepSpeed's CPU accelerator.
SUBPROCESS_ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                  "TOKENIZERS_PARALLELISM": "false", "DS_ACCELERATOR": "cpu"}


@pytest.fixture(scope="session")
def subprocess_env() -> dict[str, str]:
    return dict(SUBPROCESS_ENV)


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny CLIP as a stock `CLIPModel` dir (28 px, 14 px patches, width 32, seed 0)."""
    return testing.write_tiny_clip(tmp_path_factory.mktemp("tiny_clip") / "clip")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return testing.write_tiny_llm(tmp_path_factory.mktemp("tiny_llama"), "llama")


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return testing.write_tiny_llm(tmp_path_factory.mktemp("tiny_qwen"), "qwen2")


@pytest.fixture(scope="session")
def tiny_llava_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random LLaVA export (`testing.build_tiny_llava` defaults)."""
    return testing.build_tiny_llava(tmp_path_factory.mktemp("tiny_llava") / "export")


@pytest.fixture(scope="session")
def fixture_tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An lmms-eval task dir: the three POPE splits and `fgclip_attr_color` on three drawn images."""
    out = tmp_path_factory.mktemp("tasks")
    testing.write_fixture_tasks(out)
    return out


@pytest.fixture(scope="session")
def mini_world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The hand-drawn FineHARD / stage-1 mini world with its CLIP tokenizer (16 images)."""
    return testing.write_mini_world(tmp_path_factory.mktemp("mini"))


@pytest.fixture(scope="session")
def datagen_world(tmp_path_factory: pytest.TempPathFactory) -> testing.DatagenWorld:
    """6 synthetic-world images and their captions (no boxes): datagen's input."""
    return testing.datagen_world(tmp_path_factory.mktemp("datagen_world"), 6)
