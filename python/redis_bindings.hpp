// The Python bindings of the Redis part of the core (gpe::redis).
#pragma once

#include <nanobind/nanobind.h>

// Binds the Redis client, mirror and reader of gpe::redis, and maps their
// errors to RedisConnectionError, RedisTimeoutError,
// RedisAuthenticationError and RedisResponseError (all RedisError).
void bind_redis(nanobind::module_& m);
