// weft/errors.hpp — the exceptions weft throws, with Stackless' messages (SEMANTICS.md §6).
// tasklet_exit (TaskletExit) is in weft/tasklet.hpp; misuse of the API throws std::logic_error and
// bad arguments std::invalid_argument, with the messages Stackless gives.
#pragma once

#include <stdexcept>

namespace weft {

/// Stackless' RuntimeError for a deadlock ("Deadlock: the last runnable tasklet cannot be
/// blocked.", "the main tasklet is receiving without a sender available.", ...).
struct deadlock_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Stackless' ValueError for an operation that would block on a closing channel.
struct channel_closed : std::runtime_error {
  channel_closed() : std::runtime_error("Send/receive operation on a closed channel") {}
};

}  // namespace weft
