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

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"

namespace scrollback::testing {

// A loopback port that was free a moment ago (bind to 0, read, close).
inline int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

// A child process with its output in `log_path`. The destructor kills it (SIGTERM, then
// SIGKILL after 5 s) and reaps it, so no test leaves a process behind.
class ChildProcess {
 public:
  ChildProcess(std::vector<std::string> argv, const std::string& log_path) : argv_(argv) {
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

 private:
  std::vector<std::string> argv_;
  pid_t pid_ = -1;
  int exit_status_ = 0;
};

// True once something accepts TCP connections on 127.0.0.1:port (polls up to `limit`).
inline bool WaitForPort(int port, std::chrono::milliseconds limit) {
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
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// A single-member etcd (Debian's etcd-server) on free loopback ports, in a temporary
// directory; stopped and removed with the fixture.
struct EtcdFixture {
  EtcdFixture() {
    client_port = FreePort();
    int peer_port = FreePort();
    const std::string client = "http://127.0.0.1:" + std::to_string(client_port);
    const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port);
    process = std::make_unique<ChildProcess>(
        std::vector<std::string>{"/usr/bin/etcd", "--name", "test", "--data-dir", dir.Sub("etcd"),
                                 "--listen-client-urls", client, "--advertise-client-urls", client,
                                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                                 "--initial-cluster", "test=" + peer, "--log-level", "error"},
        dir.Sub("etcd.log"));
    REQUIRE(WaitForPort(client_port, std::chrono::seconds(20)));
  }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(client_port); }

  TempDir dir;
  int client_port = 0;
  std::unique_ptr<ChildProcess> process;
};

}  // namespace scrollback::testing
