package api

// table lists every route of the API (docs/api.md, docs/openapi.yaml).
func (a *API) table() []Route {
	const p = "/v1/projects/{p}"
	return []Route{
		{"GET", "/healthz", Public, a.healthz},
		{"GET", "/readyz", Probe, a.readyz},
		{"GET", "/v1/stats", Token, a.stats},
		{"GET", "/v1/whoami", Token, a.whoami},
		{"POST", "/v1/admin/tokens", Admin, a.createAdminToken},
		{"POST", "/v1/admin/sweep", Admin, a.sweep},
		{"GET", "/metrics", Admin, a.metrics},

		{"POST", "/v1/projects", Admin, a.createProject},
		{"GET", "/v1/projects", Token, a.listProjects},
		{"POST", p + "/tokens", Token, a.createToken},
		{"GET", p + "/tokens", Token, a.listTokens},
		{"DELETE", p + "/tokens/{id}", Token, a.deleteToken},
		{"POST", p + "/worker-secret", Token, a.rotateWorkerSecret},

		{"POST", p + "/tasks", Token, a.enqueue},
		{"GET", p + "/tasks", Token, a.listTasks},
		{"GET", p + "/tasks/{id}", Token, a.getTask},
		{"DELETE", p + "/tasks/{id}", Token, a.deleteTask},
		{"POST", p + "/tasks/{id}/cancel", Token, a.cancelTask},
		{"POST", p + "/tasks/{id}/retry", Token, a.retryTask},
		{"GET", p + "/tasks/{id}/result", Token, a.result},
		{"POST", p + "/tasks:batchGet", TokenOrSession, a.batchGet},
		{"POST", p + "/tasks:cancel", Token, a.batchCancel},
		{"POST", p + "/tasks:retry", Token, a.batchRetry},
		{"POST", p + "/tasks:delete", Token, a.batchDelete},

		{"POST", p + "/workflows", Token, a.createFlow},
		{"GET", p + "/workflows", Token, a.listFlows},
		{"GET", p + "/workflows/{id}", Token, a.getFlow},

		{"POST", p + "/schedules", Token, a.createSchedule},
		{"GET", p + "/schedules", Token, a.listSchedules},
		{"GET", p + "/schedules/{id}", Token, a.getSchedule},
		{"PATCH", p + "/schedules/{id}", Token, a.updateSchedule},
		{"POST", p + "/schedules/{id}/cancel", Token, a.cancelSchedule},
		{"POST", p + "/schedules/{id}/pause", Token, a.pauseSchedule},
		{"POST", p + "/schedules/{id}/resume", Token, a.resumeSchedule},
		{"DELETE", p + "/schedules/{id}", Token, a.deleteSchedule},

		{"GET", p + "/queues", Token, a.listQueues},
		{"POST", p + "/queues/{q}/pause", Token, a.pauseQueue},
		{"POST", p + "/queues/{q}/resume", Token, a.resumeQueue},

		{"POST", p + "/workers/register", Handshake, a.register},
		{"POST", p + "/workers/verify", Handshake, a.verify},
		{"POST", p + "/workers/refresh", WorkerOrToken, a.refresh},
		{"GET", p + "/workers", Token, a.listWorkers},
		{"POST", p + "/workers/{id}/revoke", Token, a.revokeWorker},
		{"POST", p + "/lease", WorkerOrToken, a.lease},
		{"POST", p + "/extend", WorkerOrToken, a.extend},
		{"POST", p + "/report", WorkerOrToken, a.report},
		{"POST", p + "/cancels:wait", WorkerOrToken, a.waitCancels},
		{"POST", p + "/changes:wait", WorkerOrToken, a.waitChanges},

		{"GET", p + "/events", Token, a.events},
	}
}
