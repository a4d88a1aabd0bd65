# A bare Cap'n Proto echo service: the RPC ceiling that cluster benchmarks are measured against.
@0xf7fe91a75261bf71;

$import "/capnp/c++.capnp".namespace("scrollback::bench");

interface Echo {
  echo @0 (payload :Data) -> (payload :Data);
}
