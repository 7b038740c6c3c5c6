package collectorclient

// ReviewStats are the review service's delivery counters since start.
type ReviewStats struct {
	PublishFailed  uint64 `json:"publish_failed"`
	WebhookSent    uint64 `json:"webhook_sent"`
	WebhookFailed  uint64 `json:"webhook_failed"`
	WebhookDropped uint64 `json:"webhook_dropped"`
}
