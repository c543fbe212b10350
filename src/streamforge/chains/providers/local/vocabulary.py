"""The model's vocabulary in the server process: token counts without weights or a context."""

from __future__ import annotations


class Vocabulary:
    """The model's tokenizer alone: its vocabulary, loaded without weights or a context."""

    def __init__(self, model_path: str) -> None:
        import llama_cpp

        self._llama = llama_cpp
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self._model = llama_cpp.llama_model_load_from_file(model_path.encode(), params)
        if not self._model:
            raise ValueError(f"could not read the vocabulary of {model_path}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)

    def count(self, text: str) -> int:
        data = text.encode()
        # With no room for tokens, llama.cpp answers minus the number it would write.
        count = self._llama.llama_tokenize(self._vocab, data, len(data), None, 0, False, True)
        return abs(int(count))

    def close(self) -> None:
        if self._model:
            self._llama.llama_model_free(self._model)
            self._model = None
