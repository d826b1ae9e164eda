"""Real OpenTelemetry clients for tests/otlp_e2e.rs: the Python SDK's OTLP/HTTP exporter
(protobuf, gzip) sending to Tripline's POST /v1/traces.

  app    the official `opentelemetry-instrumentation-openai-v2` instrumenting the real `openai`
         client, which calls a LiteLLM proxy (mock responses): `--chats` successful calls and
         `--failures` calls to a rate-limited model.
  burst  `--spans` inference spans written with the SDK's tracer, as an instrumentation would,
         each stating its cost: a spend burst on one key. Each carries the prompt the way
         instrumentations that capture content do (a `gen_ai.input.messages` attribute and a
         span event): Tripline must not keep it.

The key travels as the resource attribute `tripline.api_key` (Tripline's default first key
attribute); it is a raw-key-shaped string, which Tripline must fingerprint.
"""

import argparse
import json
import sys
import time


def tracer_provider(args, service):
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "tripline.api_key": args.key})
    )
    exporter = OTLPSpanExporter(
        endpoint=args.endpoint,
        headers={"Authorization": f"Bearer {args.token}"},
        compression=Compression.Gzip,
        timeout=30,
    )
    provider.add_span_processor(
        BatchSpanProcessor(exporter, max_export_batch_size=200, schedule_delay_millis=200)
    )
    return provider


def app(args):
    from opentelemetry import trace
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    provider = tracer_provider(args, "e2e-app")
    trace.set_tracer_provider(provider)
    OpenAIInstrumentor().instrument()
    import openai

    client = openai.OpenAI(base_url=args.openai_base, api_key=args.openai_key, max_retries=0)
    for _ in range(args.chats):
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": args.prompt}],
            user="u_42",
        )
    failed = 0
    for _ in range(args.failures):
        try:
            client.chat.completions.create(
                model="rate-limited",
                messages=[{"role": "user", "content": args.prompt}],
                user="u_42",
            )
        except openai.RateLimitError:
            failed += 1
    provider.shutdown()  # flushes: every span is exported (or the exporter said why not)
    print(f"app: {args.chats} chats, {failed} rate limited", flush=True)
    return 0 if failed == args.failures else 1


def burst(args):
    provider = tracer_provider(args, "e2e-batch-job")
    tracer = provider.get_tracer("e2e.burst")
    for _ in range(args.spans):
        with tracer.start_as_current_span(
            "chat gpt-4o",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o",
                "gen_ai.usage.input_tokens": 2000,
                "gen_ai.usage.output_tokens": 500,
                "gen_ai.usage.cost": args.cost,
                "client.address": "203.0.113.10",
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": args.prompt}]}]
                ),
            },
        ) as span:
            span.add_event("gen_ai.user.message", {"content": args.prompt})
    provider.shutdown()
    print(f"burst: {args.spans} spans", flush=True)
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["app", "burst"])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--openai-base")
    parser.add_argument("--openai-key")
    parser.add_argument("--prompt", default="hello")
    parser.add_argument("--chats", type=int, default=5)
    parser.add_argument("--failures", type=int, default=1)
    parser.add_argument("--spans", type=int, default=300)
    parser.add_argument("--cost", type=float, default=0.1)
    args = parser.parse_args()
    started = time.monotonic()
    code = app(args) if args.mode == "app" else burst(args)
    print(f"{args.mode}: {time.monotonic() - started:.1f} s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
