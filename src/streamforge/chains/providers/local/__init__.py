"""The local model, SmolLM2-135M-Instruct on llama.cpp by default, in these modules:

* ``types``: results, cancellation and the interface every engine offers (no llama.cpp);
* ``engine``: ``LocalLlamaEngine``, llama.cpp in the calling process, with ``template`` (the
  GGUF's chat template) and ``stops`` (stop strings in streamed text);
* ``worker`` and ``process``: the model process that runs the engine for the server, and
  ``ModelProcess``, which starts, supervises and talks to it, with ``child`` (its command,
  environment and exit), ``protocol`` (their wire format), ``vocabulary`` (token counts in the
  server) and ``host`` (one model process shared by several workers);
* ``chat_model``: ``ChatLocalLlama``, an engine as a LangChain chat model;
* ``provider``: ``LocalProvider``, the StreamForge provider over the chat model.

Importing this package imports nothing of llama.cpp: only ``engine`` (with ``template``) and
``worker`` do.
"""
