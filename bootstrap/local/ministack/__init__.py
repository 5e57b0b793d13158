"""MiniStack as the embedded stack runs it: our patches to the pinned release, one module per
patched MiniStack module, and the server that runs it (`python -m bootstrap.ministack_launcher`).

- `kinesis`: ministack.services.kinesis (record expiry, routing, PutRecords)
- `dynamodb`: ministack.services.dynamodb (BatchWriteItem checks, number checks, projections,
  conditions, request bodies)
- `lambda_svc`: ministack.services.lambda_svc (the Kinesis poller, the answer to a failed init)
- `lambda_runtime`: ministack.core.lambda_runtime (Python functions run from their zip alone, the
  worker's init errors as AWS reports them, the Kinesis batch hand-off)
- `process`: the emulator process itself (malloc arenas, full collections); patches nothing
- `server`: MiniStack's ASGI app under uvicorn

Every patch module declares what it replaces (`PATCHED`) and what its replacements use
(`USED`), and its `apply()` refuses, before changing anything, to patch a MiniStack other than
the pinned release or one missing any of those names (`_patching.PatchTargetMissing`).
docs/emulator-notes.md says what each patch changes and how it is checked against MiniStack's own
code (tests/unit/bootstrap/local/test_ministack.py).
"""
