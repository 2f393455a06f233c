// weft/weft.hpp — everything a tasklet/channel program needs.
#pragma once

#include "weft/channel.hpp"
#include "weft/gc.hpp"
#include "weft/scheduler.hpp"
#include "weft/shared.hpp"
#include "weft/profile.hpp"
#include "weft/stm.hpp"
#include "weft/tasklet.hpp"
