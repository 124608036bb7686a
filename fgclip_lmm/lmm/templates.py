"""Conversation templates (`plain`, `vicuna_v1`, `qwen2`): one definition renders training text, label spans and
the Jinja chat template saved with the processor, so training and inference prompts cannot drift apart.

A template is a handful of strings. Rendering a conversation gives the full text plus the character spans the
model must learn to generate: everything after the generation prompt up to and including the stop string (the
separator before the answer included, the stop string's trailing newline not). `{eos}` in a field is replaced by
the tokenizer's eos token (Jinja: `eos_token`), so `vicuna_v1` stops on `</s>` for Llama and on the LLM's own eos
for any other vocabulary.

| name        | rendered                                                                                    |
|-------------|---------------------------------------------------------------------------------------------|
| `plain`     | `<image>…<image>{caption}\\n` (LLaVA stage 1: the human text is dropped, only image tokens kept) |
| `vicuna_v1` | `{system} USER: <image>\\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>`           |
| `qwen2`     | ChatML: `<|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n{q}<|im_end|>\\n` then    |
|             | `<|im_start|>assistant\\n{a}<|im_end|>\\n`                                                   |

No template emits a BOS: tokenizers add it themselves (`add_special_tokens=True`), which is also what
`processor(text=prompt)` does at inference after `apply_chat_template(..., tokenize=False)`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from fgclip_lmm.constants import IMAGE_TOKEN
from fgclip_lmm.errors import InputError

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
QWEN2_SYSTEM = "You are a helpful assistant."


@dataclass(frozen=True)
class Template:
    """Strings that make up a conversation; see the module docstring for the rendering rule."""

    name: str
    system: str  # default system prompt ("" for none)
    system_format: str  # wraps the system prompt, e.g. "{system} "
    user_format: str  # wraps a user turn, e.g. "USER: {content} "
    generation_prompt: str  # what precedes every answer, e.g. "ASSISTANT:"
    answer_prefix: str  # generated before the answer text, e.g. " " (learned)
    stop: str  # generated after the answer, e.g. "{eos}" (learned)
    after_stop: str = ""  # rendered after the stop string, not learned (ChatML's "\n")
    user_text: bool = True  # False for `plain`: a user turn renders only its image tokens

    def render(
        self,
        turns: list[tuple[str, str]],
        eos_token: str,
        system: str | None = None,
        add_generation_prompt: bool = False,
    ) -> tuple[str, list[tuple[int, int]]]:
        """Render `[(role, text), ...]` (roles `user` / `assistant`) -> (text, learned character spans)."""
        system_text = self.system if system is None else system
        text = self.system_format.format(system=system_text)
        spans: list[tuple[int, int]] = []
        for role, content in turns:
            if role == "user":
                body = content if self.user_text else IMAGE_TOKEN * content.count(IMAGE_TOKEN)
                text += self.user_format.format(content=body)
            elif role == "assistant":
                text += self.generation_prompt
                start = len(text)
                text += self.answer_prefix + content + self.stop.format(eos=eos_token)
                spans.append((start, len(text)))
                text += self.after_stop
            else:
                raise ValueError(f"template {self.name!r}: unknown role {role!r}; known: user, assistant")
        if add_generation_prompt:
            text += self.generation_prompt
        return text, spans

    def chat_template(self) -> str:
        """A Jinja chat template rendering exactly what `render` does, for string and HF list content.

        List content renders each `{"type": "image"}` item as `<image>\\n` followed by the text items joined by
        a space (under `plain`: image tokens only), matching the `<image>\\n{text}` form training data is put in.
        A leading `system` message replaces the default system prompt.
        """

        def lit(value: str) -> str:
            return json.dumps(value)

        def fmt(pattern: str, key: str, expr: str) -> str:
            before, _, after = pattern.partition("{" + key + "}")
            return f"{{{{ {lit(before)} }}}}{{{{ {expr} }}}}{{{{ {lit(after)} }}}}"

        image_item = lit(IMAGE_TOKEN + "\n") if self.user_text else lit(IMAGE_TOKEN)
        text_items = "{{ content | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}"
        stop_before, _, stop_after = self.stop.partition("{eos}")
        eos_expr = "{{ eos_token }}" if "{eos}" in self.stop else ""
        stop_expr = f"{{{{ {lit(stop_before)} }}}}" + eos_expr + f"{{{{ {lit(stop_after)} }}}}"
        system_block = fmt(self.system_format, "system", "system_text")
        # `plain` renders a string user turn as its image tokens only: one per `<image>` in the text.
        image_count_expr = f"{{{{ {lit(IMAGE_TOKEN)} * (content.split({lit(IMAGE_TOKEN)}) | length - 1) }}}}"
        return (
            "{%- macro render_user(content) -%}"
            "{%- if content is string -%}"
            + ("{{ content }}" if self.user_text else image_count_expr)
            + "{%- else -%}"
            "{%- for item in content if item['type'] == 'image' -%}{{ " + image_item + " }}{%- endfor -%}"
            + (text_items if self.user_text else "")
            + "{%- endif -%}{%- endmacro -%}"
            "{%- macro render_text(content) -%}"
            "{%- if content is string -%}{{ content }}{%- else -%}" + text_items + "{%- endif -%}"
            "{%- endmacro -%}"
            "{%- if messages and messages[0]['role'] == 'system' -%}"
            "{%- set system_text = render_text(messages[0]['content']) -%}{%- set turns = messages[1:] -%}"
            "{%- else -%}"
            f"{{%- set system_text = {lit(self.system)} -%}}{{%- set turns = messages -%}}"
            "{%- endif -%}"
            + system_block
            + "{%- for message in turns -%}"
            "{%- if message['role'] == 'user' -%}"
            + fmt(self.user_format, "content", "render_user(message['content'])")
            + "{%- elif message['role'] == 'assistant' -%}"
            f"{{{{ {lit(self.generation_prompt + self.answer_prefix)} }}}}{{{{ render_text(message['content']) }}}}"
            + stop_expr
            + f"{{{{ {lit(self.after_stop)} }}}}"
            "{%- endif -%}"
            "{%- endfor -%}"
            f"{{%- if add_generation_prompt -%}}{{{{ {lit(self.generation_prompt)} }}}}{{%- endif -%}}"
        )


TEMPLATES: dict[str, Template] = {
    "plain": Template(
        name="plain", system="", system_format="{system}", user_format="{content}", generation_prompt="",
        answer_prefix="", stop="\n", user_text=False,
    ),
    "vicuna_v1": Template(
        name="vicuna_v1", system=VICUNA_SYSTEM, system_format="{system} ", user_format="USER: {content} ",
        generation_prompt="ASSISTANT:", answer_prefix=" ", stop="{eos}",
    ),
    # vicuna_v1 without its system prompt: for tiny LLMs on a CPU, where the 35-token system prompt is two thirds
    # of a single-turn sample, triples the step time and slows learning to read the image (issue 15)
    "vicuna_v1_nosys": Template(
        name="vicuna_v1_nosys", system="", system_format="{system}", user_format="USER: {content} ",
        generation_prompt="ASSISTANT:", answer_prefix=" ", stop="{eos}",
    ),
    "qwen2": Template(
        name="qwen2", system=QWEN2_SYSTEM, system_format="<|im_start|>system\n{system}<|im_end|>\n",
        user_format="<|im_start|>user\n{content}<|im_end|>\n", generation_prompt="<|im_start|>assistant\n",
        answer_prefix="", stop="<|im_end|>", after_stop="\n",
    ),
}


def get_template(name: str | Template) -> Template:
    if isinstance(name, Template):
        return name
    if name not in TEMPLATES:
        raise InputError(f"unknown conversation template {name!r}; known: {', '.join(sorted(TEMPLATES))}")
    return TEMPLATES[name]


def default_template_for(llm_model_type: str) -> str:
    """`qwen2` for Qwen2-family LLMs, `vicuna_v1` otherwise (Llama / Vicuna / Mistral)."""
    return "qwen2" if llm_model_type.startswith("qwen") else "vicuna_v1"


def stop_string(template: str | Template, eos_token: str) -> str:
    """The string generation must stop on (what the model learned to emit after an answer)."""
    return get_template(template).stop.format(eos=eos_token)
