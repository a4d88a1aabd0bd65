#include "scrollback/schema/log.h"

#include <spdlog/logger.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>

namespace scrollback {

Logger NullLogger() {
  static const Logger null_logger =  // Immutable and stateless: safe to share.
      std::make_shared<spdlog::logger>("null", std::make_shared<spdlog::sinks::null_sink_mt>());
  return null_logger;
}

Logger MakeProcessLogger(const std::string& name, const std::string& level) {
  auto logger =
      std::make_shared<spdlog::logger>(name, std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %n %v", spdlog::pattern_time_type::utc);
  auto parsed = spdlog::level::from_str(level);
  // from_str answers "off" for anything it does not know; only "off" itself may turn logs off.
  if (parsed == spdlog::level::off && level != "off") parsed = spdlog::level::info;
  logger->set_level(parsed);
  logger->flush_on(spdlog::level::warn);
  return logger;
}

Logger MakeTestLogger(const std::string& name) {
  const char* level = std::getenv("SCROLLBACK_TEST_LOG");
  if (level == nullptr || *level == '\0') return NullLogger();
  return MakeProcessLogger(name, level);
}

}  // namespace scrollback
