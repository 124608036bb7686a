"""Templates and sample encoding: label masks per template, Jinja == Python rendering, truncation, bad input."""
from __future__ import annotations

import types

import jinja2
import pytest
from transformers import AutoTokenizer

from fgclip_lmm.data.tokenizers import train_llm_tokenizer
from fgclip_lmm.lmm.assemble import add_lmm_tokens
from fgclip_lmm.lmm.encode import IGNORE_INDEX, SampleError, encode_sample
from fgclip_lmm.lmm.templates import TEMPLATES, get_template
from fgclip_lmm.testing import DEFAULT_TEXTS, train_chatml_tokenizer

N = 4  # image tokens per image


@pytest.fixture(scope="module")
def toks(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    corpus = [t for t in DEFAULT_TEXTS for _ in range(4)]
    train_llm_tokenizer(corpus, root / "llama", vocab_size=400, extra_special_tokens=())
    train_chatml_tokenizer(corpus, root / "qwen")
    llama, qwen = AutoTokenizer.from_pretrained(root / "llama"), AutoTokenizer.from_pretrained(root / "qwen")
    for tok in (llama, qwen):
        add_lmm_tokens(tok, "<image>", "<pad>")
    return types.SimpleNamespace(llama=llama, qwen=qwen)


def sample(*values, image=None, sid="s"):
    turns = [{"from": "human" if i % 2 == 0 else "gpt", "value": v} for i, v in enumerate(values)]
    return {"id": sid, "image": image, "conversations": turns}


MULTI = sample("what color is the ball?\n<image>", "the ball is green", "and the cube?", "red", image="a.png")


def label_runs(enc):
    runs, current = [], []
    for tok, lab in zip(enc.input_ids, enc.labels, strict=True):
        if lab != IGNORE_INDEX:
            assert lab == tok
            current.append(tok)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@pytest.mark.parametrize("name,tok_name", [("vicuna_v1", "llama"), ("qwen2", "qwen")])
def test_chat_label_masks(toks, name, tok_name):
    tok = getattr(toks, tok_name)
    tpl = get_template(name)
    enc = encode_sample(MULTI, tok, name, N, 512)
    image_id = tok.convert_tokens_to_ids("<image>")
    block = [i for i, t in enumerate(enc.input_ids) if t == image_id]
    assert len(block) == N and block == list(range(block[0], block[0] + N))
    assert all(enc.labels[i] == IGNORE_INDEX for i in block)
    runs = label_runs(enc)
    stop_id = tok.convert_tokens_to_ids(tpl.stop.format(eos=tok.eos_token))
    assert len(runs) == 2 and all(run[-1] == stop_id for run in runs)
    assert [tok.decode(run[:-1]).strip() for run in runs] == ["the ball is green", "red"]
    # the prompt the model sees at inference is exactly the training prefix before the first learned token
    prompt, _ = tpl.render([("user", "<image>\nwhat color is the ball?")], tok.eos_token, add_generation_prompt=True)
    prompt_ids = tok(prompt)["input_ids"]
    first = enc.labels.index(runs[0][0])
    expanded = [t for p in prompt_ids for t in ([p] * N if p == image_id else [p])]
    assert enc.input_ids[:first] == expanded
    if name == "vicuna_v1":
        assert enc.input_ids[0] == tok.bos_token_id
    else:
        assert tok.bos_token_id is None and enc.input_ids[0] == tok.convert_tokens_to_ids("<|im_start|>")
        newline_after_stop = enc.input_ids[enc.input_ids.index(stop_id) + 1]
        assert enc.labels[enc.input_ids.index(stop_id) + 1] == IGNORE_INDEX and tok.decode([newline_after_stop]) == "\n"


def test_plain_label_mask_keeps_only_image_and_caption(toks):
    tok = toks.llama
    enc = encode_sample(sample("<image>\nDescribe the image.", "a red cube", image="x.png"), tok, "plain", N, 512)
    image_id = tok.convert_tokens_to_ids("<image>")
    assert enc.input_ids[:1 + N] == [tok.bos_token_id] + [image_id] * N  # the human text is dropped
    assert enc.labels[:1 + N] == [IGNORE_INDEX] * (1 + N)
    assert all(lab != IGNORE_INDEX for lab in enc.labels[1 + N:])
    assert tok.decode(enc.input_ids[1 + N:]) == "a red cube\n"


def test_text_only_sample(toks):
    enc = encode_sample(sample("hello there", "hi"), toks.llama, "vicuna_v1", N, 512)
    assert enc.num_images == 0 and toks.llama.convert_tokens_to_ids("<image>") not in enc.input_ids
    assert len(label_runs(enc)) == 1


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_jinja_chat_template_renders_exactly_like_training(name):
    tpl = get_template(name)
    env = jinja2.Environment()
    chat = env.from_string(tpl.chat_template())
    turns = [("user", "<image>\nwhat is it?"), ("assistant", "a cube"), ("user", "color?"), ("assistant", "red")]
    want, _ = tpl.render(turns, "</s>")
    as_str = [{"role": r, "content": c} for r, c in turns]
    assert chat.render(messages=as_str, eos_token="</s>", add_generation_prompt=False) == want
    as_list = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]},
               {"role": "assistant", "content": [{"type": "text", "text": "a cube"}]},
               {"role": "user", "content": [{"type": "text", "text": "color?"}]},
               {"role": "assistant", "content": "red"}]
    assert chat.render(messages=as_list, eos_token="</s>", add_generation_prompt=False) == want
    prompt, _ = tpl.render(turns[:1], "</s>", add_generation_prompt=True)
    assert chat.render(messages=as_str[:1], eos_token="</s>", add_generation_prompt=True) == prompt
    system = [{"role": "system", "content": "Be brief."}] + as_str[:1]
    custom, _ = tpl.render(turns[:1], "</s>", system="Be brief.", add_generation_prompt=True)
    assert chat.render(messages=system, eos_token="</s>", add_generation_prompt=True) == custom


def test_unknown_template_lists_known():
    with pytest.raises(ValueError, match="unknown conversation template 'llava_v1'; known: plain, qwen2, vicuna_v1"):
        get_template("llava_v1")


@pytest.mark.parametrize("bad,reason,message", [
    (sample("<image>\nq", "a"), "token_without_image", "1 '<image>' token\\(s\\) but no image given"),
    (sample("q", "a", image="x.png"), "image_without_token", "1 image\\(s\\) given but no '<image>'"),
    (sample("<image><image>\nq", "a", image="x.png"), "image_count_mismatch",
     "more '<image>' tokens \\(2\\) than images \\(1\\)"),
    (sample("<image>\nq", "a", image=["x.png", "y.png"]), "image_count_mismatch",
     "fewer '<image>' tokens \\(1\\) than images \\(2\\)"),
    (sample("q", "a", "q2"), "bad_conversation", "must end with a gpt turn"),
    ({"id": "s", "conversations": [{"from": "gpt", "value": "a"}]}, "bad_conversation", "expected 'human'"),
    (sample("q", "look <image>"), "bad_conversation", "gpt turn containing"),
])
def test_bad_samples_raise_with_reason(toks, bad, reason, message):
    with pytest.raises(SampleError, match=message) as info:
        encode_sample(bad, toks.llama, "vicuna_v1", N, 512)
    assert info.value.reason == reason and "sample 's'" in str(info.value)


def test_truncation_never_cuts_an_image_block(toks):
    tok = toks.qwen
    image_id = tok.convert_tokens_to_ids("<image>")
    two = sample("<image>\nfirst picture", "a red cube", "<image>\nsecond picture", "a blue ball", image=["a", "b"])
    full = encode_sample(two, tok, "qwen2", N, 512)
    second = [i for i, t in enumerate(full.input_ids) if t == image_id][N]
    for max_len in range(second + 1, second + N):  # every cut that would land inside the second block
        enc = encode_sample(two, tok, "qwen2", N, max_len)
        assert enc.truncated and enc.num_images == 1 and len(enc.input_ids) == second
        assert enc.input_ids.count(image_id) == N
    enc = encode_sample(two, tok, "qwen2", N, second + N)
    assert enc.num_images == 2 and enc.input_ids.count(image_id) == 2 * N
    assert encode_sample(two, tok, "qwen2", N, 512).truncated is False


def test_sample_that_cannot_fit_even_without_text(toks):
    one = sample("<image>\nq", "a red cube", image="x.png")
    too_long = "needs .* tokens up to the end of its first image .* model_max_length is 3"
    with pytest.raises(SampleError, match=too_long) as info:
        encode_sample(one, toks.llama, "vicuna_v1", N, 3)
    assert info.value.reason == "too_long"
    prefix = encode_sample(one, toks.llama, "vicuna_v1", N, 512).labels.index(next(
        lab for lab in encode_sample(one, toks.llama, "vicuna_v1", N, 512).labels if lab != IGNORE_INDEX))
    with pytest.raises(SampleError, match="no answer token left") as info:
        encode_sample(one, toks.llama, "vicuna_v1", N, prefix)
    assert info.value.reason == "no_target"


def test_tokenizer_without_atomic_image_token_is_rejected(tmp_path):
    corpus = [t for t in DEFAULT_TEXTS for _ in range(4)]
    tok = train_llm_tokenizer(corpus, tmp_path, vocab_size=400, extra_special_tokens=())
    with pytest.raises(SampleError, match="must hold it as one special token") as info:
        encode_sample(sample("<image>\nq", "a", image="x"), tok, "vicuna_v1", N, 512)
    assert info.value.reason == "tokenization_mismatch"
