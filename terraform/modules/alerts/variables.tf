variable "stage" {
  description = "Deployment stage for resource names"
  type        = string
}

variable "email" {
  description = "Address that receives the alarms (it must confirm the subscription); null for none"
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource"
  type        = map(string)
}
