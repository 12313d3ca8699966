"""The streaming pipeline: thin Faust wiring around the verifier.

intake → re-key by domain → resolve → re-key by mail host → probe →
verdicts, with retry tiers and a dead-letter topic. The modules:

- ``app``: builds the Faust app (topics, tables, agents) and wires the stages;
- ``intake``, ``resolve``, ``probe``, ``tiers``: the stages, each a class an
  agent hands its batches to, deciding nothing the core does not decide;
- ``outputs``: where the stages' results go (verdicts, retry tiers, the next
  stage, dead letters); ``tables`` and ``sent``: the tables they write;
- ``schemas``, ``records``, ``codecs``: the Avro wire contract, the events as
  dataclasses, and their bytes (Faust codecs registered by ``register_codecs()``);
- ``topology``: topic and table names and sizes from Settings;
- ``inputs``: address lists (text, CSV, JSON lines) → requests;
- ``runner``: a broker, its topics and a worker for the commands and tests;
- ``kafka_admin``: requests any broker answers; ``tansu``: the workarounds for
  the embedded broker's deviations, one place.

Importing this package, or any module in it, has no side effects.
"""
