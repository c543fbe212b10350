"""The prompt's form: the GGUF's own chat template, as llama.cpp's chat completion applies it."""

from __future__ import annotations

from typing import cast

import llama_cpp
from llama_cpp import llama_chat_format


def chat_formatter(llm: llama_cpp.Llama) -> llama_chat_format.ChatFormatter:
    """The GGUF's own chat template, as ``create_chat_completion`` would use it."""
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        return cast("llama_chat_format.ChatFormatter", llama_chat_format.format_chatml)
    eos = llm.token_eos()
    bos = llm.token_bos()
    return llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=llm.detokenize([eos], special=True).decode() if eos != -1 else "",
        bos_token=llm.detokenize([bos], special=True).decode() if bos != -1 else "",
        stop_token_ids=[eos],
    )
