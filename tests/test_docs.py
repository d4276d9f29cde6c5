"""The documentation's Python code blocks run as written, and the KERNELS.md loop computes what the
model's own logits say."""

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


BLOCKS = [(path.name, i, code) for path in DOCS for i, code in enumerate(python_blocks(path))]


def test_the_docs_have_code_to_run():
    assert any(name == "KERNELS.md" for name, _, _ in BLOCKS)


@pytest.mark.parametrize("name, index, code", BLOCKS, ids=[f"{n}-{i}" for n, i, _ in BLOCKS])
def test_docs_code_block_runs(name, index, code):
    exec(compile(code, f"{name} block {index}", "exec"), {})


def test_kernels_doc_loop_matches_the_models_logits():
    """The block's log-probs equal log_softmax of the model's logits at the rows that predict the
    answer (an off-by-one or a batch-dim index would not)."""
    code = next(code for name, _, code in BLOCKS if name == "KERNELS.md" and "coars_loss(" in code)
    ns: dict = {}
    exec(compile(code, "KERNELS.md loop", "exec"), ns)
    answer = ns["answer"][0]
    with torch.no_grad():
        logits = ns["model"](ns["student_ids"]).logits[0]
        teacher_logits = ns["model"](ns["teacher_ids"]).logits[0]
    n = len(answer)
    expected = torch.log_softmax(logits[-n - 1 : -1], -1).gather(1, answer[:, None])[:, 0]
    expected_teacher = torch.log_softmax(teacher_logits[-n - 1 : -1], -1).gather(1, answer[:, None])[:, 0]
    torch.testing.assert_close(ns["stats"]["logp_student"], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ns["stats"]["logp_teacher"], expected_teacher, atol=1e-5, rtol=1e-5)
    assert ns["model"].model.layers[0].self_attn.q_proj.weight.grad is not None
