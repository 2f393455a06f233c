// The non-template half of channel<T>: argument checks and the intents of channel operations (those of
// plain send/receive are built inline in channel.hpp, in the caller's frame). The matching rules themselves are applied by the scheduler (scheduler/src/apply.cpp), because channel
// wait queues are committed together with the runnable ring.
#include <stdexcept>

#include "weft/channel.hpp"

namespace weft::detail {

void channel_set(channel_core* c, intent_kind kind, int value, const std::source_location& where) {
  if (kind == intent_kind::channel_preference && (value < -1 || value > 1))
    throw std::invalid_argument("channel preference must be -1 (prefer receiver), 0 or 1 (prefer sender)");
  intent in{.kind = kind, .channel = c, .value = value, .where = where};
  perform(in);
}

op_status channel_transfer(channel_core* c, int direction, void* slot, std::exception_ptr e, bool nonblocking,
                           const std::source_location& where) {
  intent in{.kind = intent_kind::channel_op, .channel = c, .value = direction, .nonblocking = nonblocking,
            .slot = slot, .exception = std::move(e), .where = where};
  return perform(in);
}

}  // namespace weft::detail
