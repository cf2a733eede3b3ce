# Loom on Nomad: two schedulers, two validators, Klaxon and the agents, each a
# `loom` task of the Docker driver running the image of deploy/Dockerfile
# against an existing NATS JetStream cluster (nats_urls). docs/deployment.md
# walks through it. Every task renders loom.toml and the registry
# (workers.toml) of this directory; run the job from here, since file()
# reads them relative to the current directory:
#
#   nomad var put nomad/jobs/loom scheduler_password=... agent_password=... \
#       validator_password=... klaxon_password=...
#   nomad job run -var 'nats_urls=["nats://10.0.0.11:4222"]' loom.nomad.hcl
#
# Each role logs in to NATS as its own user (deploy/nats/auth.conf); the
# passwords come from the Nomad variable nomad/jobs/loom, which the job's
# tasks may read. The topology (`loom init`, as the NATS user admin) is run
# once by hand: docs/deployment.md shows how. Needs Nomad 1.6 or later (Nomad
# variables, service checks without Consul, datacenter wildcards). The
# agents' kill_timeout (90s) is above the clients' default max_kill_timeout
# (30s): raise it in the client configuration, or the drain is cut short.

variable "image" {
  description = "The Loom image (deploy/Dockerfile), pushed to a registry the clients reach."
  type        = string
  default     = "registry.example.com/loom:0.1.0"
}

variable "nats_urls" {
  description = "URLs of the NATS cluster's servers, e.g. [\"nats://10.0.0.11:4222\", \"nats://10.0.0.12:4222\"]."
  type        = list(string)
}

variable "datacenters" {
  description = "Datacenters the job may run in."
  type        = list(string)
  default     = ["*"]
}

job "loom" {
  datacenters = var.datacenters
  type        = "service"

  # Roll one allocation at a time, and only on to the next once the new one
  # passes its checks.
  update {
    max_parallel     = 1
    health_check     = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "5m"
    auto_revert      = true
  }

  # The scheduler: one leader (the lease in the loom_leader bucket) and one
  # standby that takes over within scheduler.lease_ttl.
  group "scheduler" {
    count = 2

    spread {
      attribute = "${node.unique.id}"
    }

    network {
      port "http" {
        to = 9810
      }
    }

    service {
      name     = "loom-scheduler"
      provider = "nomad"
      port     = "http"
      tags     = ["loom", "metrics"]

      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"

        check_restart {
          limit = 3
          grace = "30s"
        }
      }

      check {
        name     = "readyz"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "loom" {
      driver       = "docker"
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      config {
        image = var.image
        args  = ["scheduler"]
        ports = ["http"]
      }

      env {
        LOOM_CONFIG     = "/local/loom.toml"
        LOOM_LOG_FORMAT = "json"
        LOOM_NATS__URL  = jsonencode(var.nats_urls)
        LOOM_NATS__USER = "scheduler"
      }

      # Loom reloads loom.toml and the registry on SIGHUP.
      template {
        data          = file("loom.toml")
        destination   = "local/loom.toml"
        change_mode   = "signal"
        change_signal = "SIGHUP"
      }

      template {
        data          = file("workers.toml")
        destination   = "local/workers.toml"
        change_mode   = "signal"
        change_signal = "SIGHUP"
      }

      template {
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/loom" }}LOOM_NATS__PASSWORD='{{ .scheduler_password }}'{{ end }}
        EOT
        destination = "secrets/nats.env"
        env         = true
        change_mode = "restart"
      }

      resources {
        cpu        = 100
        memory     = 128
        memory_max = 256
      }
    }
  }

  # The validator: verdicts, the watchdog, dead letters; the dashboard and
  # the JSON API on its http port. Two share the work.
  group "validator" {
    count = 2

    spread {
      attribute = "${node.unique.id}"
    }

    network {
      port "http" {
        to = 9810
      }
    }

    service {
      name     = "loom-validator"
      provider = "nomad"
      port     = "http"
      tags     = ["loom", "metrics", "dashboard"]

      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"

        check_restart {
          limit = 3
          grace = "30s"
        }
      }

      check {
        name     = "readyz"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "loom" {
      driver       = "docker"
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      config {
        image = var.image
        args  = ["validator"]
        ports = ["http"]
      }

      env {
        LOOM_CONFIG     = "/local/loom.toml"
        LOOM_LOG_FORMAT = "json"
        LOOM_NATS__URL  = jsonencode(var.nats_urls)
        LOOM_NATS__USER = "validator"
      }

      template {
        data          = file("loom.toml")
        destination   = "local/loom.toml"
        change_mode   = "signal"
        change_signal = "SIGHUP"
      }

      template {
        data          = file("workers.toml")
        destination   = "local/workers.toml"
        change_mode   = "signal"
        change_signal = "SIGHUP"
      }

      template {
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/loom" }}LOOM_NATS__PASSWORD='{{ .validator_password }}'{{ end }}
        EOT
        destination = "secrets/nats.env"
        env         = true
        change_mode = "restart"
      }

      resources {
        cpu        = 200
        memory     = 256
        memory_max = 512
      }
    }
  }

  # Klaxon: dead letters become alerts. Its sinks come from the item
  # klaxon_sinks of the Nomad variable (the klaxon.sinks list in TOML's
  # inline syntax); without it Klaxon only logs alerts.
  group "klaxon" {
    count = 1

    network {
      port "http" {
        to = 9810
      }
    }

    service {
      name     = "loom-klaxon"
      provider = "nomad"
      port     = "http"
      tags     = ["loom", "metrics"]

      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"

        check_restart {
          limit = 3
          grace = "30s"
        }
      }

      check {
        name     = "readyz"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "loom" {
      driver       = "docker"
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      config {
        image = var.image
        args  = ["klaxon"]
        ports = ["http"]
      }

      env {
        LOOM_CONFIG     = "/local/loom.toml"
        LOOM_LOG_FORMAT = "json"
        LOOM_NATS__URL  = jsonencode(var.nats_urls)
        LOOM_NATS__USER = "klaxon"
      }

      template {
        data          = file("loom.toml")
        destination   = "local/loom.toml"
        change_mode   = "signal"
        change_signal = "SIGHUP"
      }

      template {
        data          = file("workers.toml")
        destination   = "local/workers.toml"
        change_mode   = "signal"
        change_signal = "SIGHUP"
      }

      template {
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/loom" }}LOOM_NATS__PASSWORD='{{ .klaxon_password }}'
          {{ if .klaxon_sinks }}LOOM_KLAXON__SINKS='{{ .klaxon_sinks }}'{{ end }}{{ end }}
        EOT
        destination = "secrets/nats.env"
        env         = true
        change_mode = "restart"
      }

      resources {
        cpu        = 100
        memory     = 128
        memory_max = 256
      }
    }
  }

  # The agents: they pull runs and execute the worker programs of the image.
  # Scale with `nomad job scale loom agents <n>`.
  group "agents" {
    count = 2

    spread {
      attribute = "${node.unique.id}"
    }

    network {
      port "http" {
        to = 9810
      }
    }

    service {
      name     = "loom-agent"
      provider = "nomad"
      port     = "http"
      tags     = ["loom", "metrics"]

      check {
        name     = "healthz"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"

        check_restart {
          limit = 3
          grace = "30s"
        }
      }

      check {
        name     = "readyz"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "2s"
      }
    }

    task "loom" {
      driver      = "docker"
      kill_signal = "SIGTERM"
      # On SIGTERM an agent takes no new runs, gives the running ones
      # agent.drain_timeout (30s) to finish, then stops the rest and hands
      # them back (up to 30s more); then it drains its NATS connection.
      kill_timeout = "90s"

      config {
        image = var.image
        args  = ["agent"]
        ports = ["http"]
      }

      env {
        LOOM_CONFIG     = "/local/loom.toml"
        LOOM_LOG_FORMAT = "json"
        LOOM_NATS__URL  = jsonencode(var.nats_urls)
        LOOM_NATS__USER = "agent"
      }

      template {
        data          = file("loom.toml")
        destination   = "local/loom.toml"
        change_mode   = "signal"
        change_signal = "SIGHUP"
      }

      template {
        data          = file("workers.toml")
        destination   = "local/workers.toml"
        change_mode   = "signal"
        change_signal = "SIGHUP"
      }

      template {
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/loom" }}LOOM_NATS__PASSWORD='{{ .agent_password }}'{{ end }}
        EOT
        destination = "secrets/nats.env"
        env         = true
        change_mode = "restart"
      }

      resources {
        cpu        = 1000
        memory     = 512
        memory_max = 2048
      }
    }
  }
}
