# A bare Cap'n Proto echo service: the RPC ceiling that cluster benchmarks are measured against.
@0xf7fe91a75261bf71;

$import "/capnp/c++.capnp".namespace("scrollback::bench");

interface Echo {
  # Returns the payload: the ceiling for calls that carry their data (sends, edits).
  echo @0 (payload :Data) -> (payload :Data);
  # Returns `bytes` bytes: the ceiling for reads with a small request and a large reply (a
  # history page, an inbox page). At most 16 MiB.
  reply @1 (bytes :UInt32) -> (payload :Data);
}
