"""The jobs' Prometheus collector: queue length, jobs by state and the workers' counters, read at scrape time."""
from __future__ import annotations

import logging

from .api import Jobs

log = logging.getLogger("stt_common.jobs")


def register_job_metrics(metrics, jobs: Jobs) -> None:
    """Queue length, jobs by state and the workers' counters, read from Redis at scrape time."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self):
            if not jobs.enabled:
                return
            try:
                counts = jobs.counts()
            except Exception as e:  # noqa: BLE001 - a scrape must not fail with Redis
                log.warning("job metrics unavailable: %s", e)
                return
            g = GaugeMetricFamily("stt_jobs", "Jobs by state (queued includes those waiting for a retry)",
                                  labels=["state"])
            g.add_metric(["queued"], counts["queued"])
            g.add_metric(["running"], counts["running"])
            yield g
            stats = counts["stats"]
            c = CounterMetricFamily("stt_jobs_finished", "Jobs finished, by outcome", labels=["outcome"])
            for outcome in ("succeeded", "failed", "canceled"):
                c.add_metric([outcome], stats.get(f"jobs_{outcome}", 0.0))
            yield c
            yield CounterMetricFamily("stt_job_seconds", "Seconds workers spent on jobs",
                                      value=stats.get("job_seconds", 0.0))
            yield CounterMetricFamily("stt_job_audio_seconds", "Seconds of audio transcribed by jobs",
                                      value=stats.get("job_audio_seconds", 0.0))
            yield CounterMetricFamily("stt_webhook_failures", "Webhook deliveries that failed (each attempt)",
                                      value=stats.get("webhook_failures", 0.0))
            try:
                hosts = jobs.per_worker()
            except Exception as e:  # noqa: BLE001
                log.warning("per-worker job metrics unavailable: %s", e)
                return
            alive = GaugeMetricFamily("stt_job_workers", "RQ workers alive, by worker host", labels=["worker"])
            run = GaugeMetricFamily("stt_jobs_running_by_worker", "Jobs running, by worker host", labels=["worker"])
            done = CounterMetricFamily("stt_jobs_finished_by_worker", "Jobs finished, by worker host and outcome",
                                       labels=["worker", "outcome"])
            audio = CounterMetricFamily("stt_job_audio_seconds_by_worker", "Seconds of audio transcribed, by worker "
                                        "host", labels=["worker"])
            for name, h in sorted(hosts.items()):
                alive.add_metric([name], h["workers"])
                run.add_metric([name], h["running"])
                for outcome in ("succeeded", "failed", "canceled"):
                    done.add_metric([name, outcome], h["stats"].get(f"jobs_{outcome}", 0.0))
                audio.add_metric([name], h["stats"].get("job_audio_seconds", 0.0))
            yield alive
            yield run
            yield done
            yield audio

    metrics.registry.register(Collector())
