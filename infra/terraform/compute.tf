resource "aws_cloudwatch_log_group" "collector" {
  name              = "/${var.name}/collector"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_launch_template" "collector" {
  #checkov:skip=CKV_AWS_88:the collector reaches Binance through the internet gateway with no inbound rule at all; a NAT gateway would cost more than the instance and add a failure point
  name_prefix            = "${var.name}-collector-"
  image_id               = local.ami_id
  instance_type          = var.instance_type
  update_default_version = true
  ebs_optimized          = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.collector.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1
    instance_metadata_tags      = "disabled"
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.root_volume_gb
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = aws_kms_key.main.arn
      delete_on_termination = true
    }
  }

  # A public address to reach Binance through the internet gateway, with no inbound rule
  # (administration is through Session Manager).
  network_interfaces {
    associate_public_ip_address = true
    security_groups             = [aws_security_group.collector.id]
    subnet_id                   = aws_subnet.public.id
    delete_on_termination       = true
  }

  monitoring {
    enabled = true
  }

  user_data = base64encode(templatefile("${path.module}/templates/user_data.sh.tftpl", {
    region             = var.region
    ssm_parameter_name = var.ssm_parameter_name
  }))

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${var.name}-collector" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(local.tags, { Name = "${var.name}-collector" })
  }
}

# A group of one: a dead or unhealthy instance is replaced, and CodeDeploy deploys to it.
resource "aws_autoscaling_group" "collector" {
  name                      = "${var.name}-collector"
  min_size                  = 1
  max_size                  = 1
  desired_capacity          = 1
  vpc_zone_identifier       = [aws_subnet.public.id]
  health_check_type         = "EC2"
  health_check_grace_period = 300
  enabled_metrics           = ["GroupInServiceInstances", "GroupDesiredCapacity"]

  launch_template {
    id      = aws_launch_template.collector.id
    version = aws_launch_template.collector.latest_version
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 0
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { Name = "${var.name}-collector" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  # The instance's first boot (templates/user_data.sh.tftpl) installs packages over the internet
  # and reads the .env parameter with the role's permissions, once, under `set -e`: launching it
  # before the route out, the parameter or the role's policies exist makes a collector that never
  # got its agent or its settings. Nothing above refers to these, so the order is stated here.
  depends_on = [
    aws_route.internet,
    aws_route_table_association.public,
    aws_ssm_parameter.collector_env,
    aws_iam_role_policy.collector,
    aws_iam_role_policy_attachment.collector_ssm,
  ]
}
