// Helpers for tests that start real processes (etcd, scrollbackd, scrollback-router): free
// loopback ports, child processes that are always stopped, and an etcd fixture.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace scrollback::testing {

// A loopback port that was free a moment ago, chosen below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range). A port from that range could be handed to an outgoing
// connection while its server is down (a restarted node would then fail to bind), or even
// connect to itself (TCP simultaneous open) when a client dials it with nothing listening.
inline int FreePort() {
  int ephemeral_low = 32768;
  if (FILE* range = std::fopen("/proc/sys/net/ipv4/ip_local_port_range", "r")) {
    if (std::fscanf(range, "%d", &ephemeral_low) != 1) ephemeral_low = 32768;
    std::fclose(range);
  }
  const int high = std::max(2024, ephemeral_low) - 1;
  const int low = std::max(1024, std::min(10000, high - 5000));
  static std::mt19937 pick(std::random_device{}());
  static std::set<int> handed_out;  // Never the same port twice in one test process.
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const int port = std::uniform_int_distribution<int>(low, high)(pick);
    if (!handed_out.insert(port).second) continue;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const bool free = bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    if (free) return port;
  }
  FAIL("no free loopback port in " << low << ".." << high);
  return 0;
}

// The last `max_bytes` of a file (a child's log), for failure messages.
inline std::string FileTail(const std::string& path, size_t max_bytes = 4000) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.size() > max_bytes ? text.substr(text.size() - max_bytes) : text;
}

// A child process with its output in `log_path`. The destructor kills it (SIGTERM, then
// SIGKILL after 5 s) and reaps it, so no test leaves a process behind.
class ChildProcess {
 public:
  ChildProcess(std::vector<std::string> argv, const std::string& log_path)
      : argv_(argv), log_path_(log_path) {
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(log, STDOUT_FILENO);
      dup2(log, STDERR_FILENO);
      std::vector<char*> args;
      for (auto& a : argv) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~ChildProcess() { Stop(SIGTERM, std::chrono::seconds(5)); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Sends `sig`, waits up to `grace` for the exit, then SIGKILLs. Returns the wait status.
  int Stop(int sig, std::chrono::milliseconds grace) {
    if (pid_ <= 0) return exit_status_;
    kill(pid_, sig);
    auto deadline = std::chrono::steady_clock::now() + grace;
    while (std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid_, &exit_status_, WNOHANG) == pid_) {
        pid_ = -1;
        return exit_status_;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, &exit_status_, 0);
    pid_ = -1;
    return exit_status_;
  }
  bool Running() {
    if (pid_ <= 0) return false;
    if (waitpid(pid_, &exit_status_, WNOHANG) == pid_) pid_ = -1;
    return pid_ > 0;
  }
  pid_t pid() const { return pid_; }
  // The end of what the child printed (stdout and stderr).
  std::string LogTail() const { return FileTail(log_path_); }

 private:
  std::vector<std::string> argv_;
  std::string log_path_;
  pid_t pid_ = -1;
  int exit_status_ = 0;
};

// True once something accepts TCP connections on 127.0.0.1:port (polls up to `limit`). With
// `child`, gives up as soon as that process has exited.
inline bool WaitForPort(int port, std::chrono::milliseconds limit, ChildProcess* child = nullptr) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool up = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    if (up) return true;
    if (child != nullptr && !child->Running()) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// Requires `child` to listen on `port` within `limit`; a failure shows the end of its log.
#define SB_REQUIRE_LISTENING(child, port, limit)                                       \
  do {                                                                                 \
    if (!::scrollback::testing::WaitForPort((port), (limit), &(child))) {              \
      FAIL("nothing listens on port " << (port) << "; the process "                    \
                                      << ((child).Running() ? "still runs" : "exited") \
                                      << ". The end of its log:\n"                     \
                                      << (child).LogTail());                           \
    }                                                                                  \
  } while (false)

// A single-member etcd (Debian's etcd-server) on free loopback ports, in a temporary
// directory; stopped and removed with the fixture.
struct EtcdFixture {
  EtcdFixture() {
    client_port = FreePort();
    int peer_port = FreePort();
    const std::string client = "http://127.0.0.1:" + std::to_string(client_port);
    const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port);
    argv = {"/usr/bin/etcd",
            "--name",
            "test",
            "--data-dir",
            dir.Sub("etcd"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            "test=" + peer,
            "--log-level",
            "error"};
    Start();
  }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(client_port); }
  // Starts etcd (again, on its data and ports: after a Stop or a crash).
  void Start() {
    process = std::make_unique<ChildProcess>(argv, dir.Sub("etcd.log"));
    SB_REQUIRE_LISTENING(*process, client_port, std::chrono::seconds(20));
  }

  TempDir dir;
  int client_port = 0;
  std::vector<std::string> argv;
  std::unique_ptr<ChildProcess> process;
};

}  // namespace scrollback::testing
