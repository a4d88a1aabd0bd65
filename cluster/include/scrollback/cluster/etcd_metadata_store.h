// The etcd implementation of MetadataStore, for multi-process and multi-machine deployments.
//
// Talks to etcd 3.4's v3 JSON gateway (POST /v3/kv/range, /v3/kv/put, /v3/kv/txn,
// /v3/kv/deleterange, /v3/lease/*) over HTTP/1.1 with Boost.Beast. Keys and values travel
// base64-encoded; int64 fields come back as JSON strings; fields with default values are
// omitted (a failed txn has no "succeeded"). Versions are etcd mod_revisions.
//
// Watches poll the prefix (default every 100 ms) and report keys whose mod_revision changed or
// that disappeared; see docs/decisions/0003-etcd-watch-by-polling.md.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "scrollback/cluster/metadata_store.h"
#include "scrollback/schema/log.h"

namespace scrollback {

struct EtcdOptions {
  // Required: host:port of an etcd client URL (http only), e.g. "127.0.0.1:2379".
  std::string endpoint;
  // Default: 3 s. Bound on each HTTP request.
  std::chrono::milliseconds request_timeout = std::chrono::seconds(3);
  // Default: 100 ms. How long a broken watch stream waits before it resumes.
  std::chrono::milliseconds watch_retry_interval = std::chrono::milliseconds(100);
  // Default: 128 (etcd's own default). etcd's --max-txn-ops: the most writes one Commit takes.
  size_t max_txn_ops = 128;
  // Default: 0. How long NewEtcdMetadataStore keeps retrying while etcd is not answering yet
  // (daemons started beside etcd set this; etcd accepts connections before it serves).
  std::chrono::milliseconds wait_for_etcd = std::chrono::milliseconds(0);
  // Default: none (quiet). Broken watch streams are logged here (once per outage).
  Logger logger;
};

// Checks that etcd answers (a range read, retried for up to wait_for_etcd) before returning.
Result<std::shared_ptr<MetadataStore>> NewEtcdMetadataStore(const EtcdOptions& options);

}  // namespace scrollback
