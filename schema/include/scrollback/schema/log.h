// Logging: spdlog loggers, passed in (never a global default logger). Every part that can
// swallow an error takes a `std::shared_ptr<spdlog::logger>` in its options and logs one line
// per event there; the process's main() makes the logger (MakeProcessLogger), tests get a quiet
// one unless they ask (MakeTestLogger).
//
// This header is light: it forward-declares spdlog's logger. Files that log include
// <spdlog/logger.h> themselves.
#pragma once

#include <memory>
#include <string>

namespace spdlog {
class logger;
}  // namespace spdlog

namespace scrollback {

using Logger = std::shared_ptr<spdlog::logger>;

// A logger that writes nothing (the default of every options struct: a component that was given
// no logger stays quiet, never crashes).
Logger NullLogger();

// A logger named `name` writing one line per event to stderr, at `level` and above
// ("trace", "debug", "info", "warn", "error", "off"; unknown: "info"). Line format:
//   2026-11-28T07:21:53.123Z info scrollbackd[n1] message
Logger MakeProcessLogger(const std::string& name, const std::string& level = "info");

// For tests: NullLogger() unless the environment variable SCROLLBACK_TEST_LOG names a level,
// then MakeProcessLogger(name, that level).
Logger MakeTestLogger(const std::string& name);

// `logger` if it is set, else NullLogger(): what components call on the logger they were given.
inline Logger OrNull(Logger logger) { return logger ? std::move(logger) : NullLogger(); }

}  // namespace scrollback
