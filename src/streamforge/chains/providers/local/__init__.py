"""The local model, SmolLM2-135M-Instruct on llama.cpp by default, in five modules:

* ``types``: results, cancellation and the interface every engine offers (no llama.cpp);
* ``engine``: ``LocalLlamaEngine``, llama.cpp in the calling process;
* ``worker`` and ``process``: the model process that runs the engine for the server, and
  ``ModelProcess``, which starts, supervises and talks to it;
* ``chat_model``: ``ChatLocalLlama``, an engine as a LangChain chat model;
* ``provider``: ``LocalProvider``, the StreamForge provider over the chat model.

Importing this package imports nothing of llama.cpp: only ``engine`` and ``worker`` do.
"""
