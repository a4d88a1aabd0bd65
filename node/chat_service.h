// The ChatStore + Node Cap'n Proto service of a storage node. Private to node/.
//
// One service object per event loop; all state is in NodeCore. Each call is split in three:
// read the parameters (on the loop), do the engine work (on the engine pool, or on the loop for
// reads that memory can answer), write the results (on the loop). Every reply carries errors as
// values (types.capnp Error), never as exceptions. Writes go only to shards this node holds as
// primary (others answer not-primary); keys of shards still opening answer unavailable.
#pragma once

#include <capnp/capability.h>
#include <kj/timer.h>

#include <memory>

#include "node_core.h"

namespace scrollback {

// `timer`: the event loop's (long polls and session reads wait on it).
capnp::Capability::Client NewChatService(std::shared_ptr<NodeCore> core, kj::Timer& timer);

}  // namespace scrollback
